// plotstream live viewer. One page follows one stream (/streams/{token}) or every trace of a
// figure (/~user/n/, data-mode="plot"). It applies snapshots with Plotly.react and updates with
// Plotly.extendTraces (each trace's maxpoints), redrawing at most 20 times per second, and never
// shows a silent gap: a sequence break or a reset brings a fresh snapshot.
//
// A single stream's page also explores its history (GET …/history): a range button or a zoom
// fetches that range, downsampled to the plot's width, and draws it instead of the live window;
// the feed keeps running meanwhile, so "live" draws the current window again without a reload.
(function () {
  "use strict";
  var el = document.getElementById("plot");
  var stateEl = document.getElementById("state");
  var rateEl = document.getElementById("rate");
  var countEl = document.getElementById("count");
  var rangeEl = document.getElementById("range");
  var csvEl = document.getElementById("csv");
  var nameEl = document.querySelector("header .token");
  var plotMode = el.dataset.mode === "plot";

  // The server serves the plotly.js built into it; only a `--plotly-js` file or URL that cannot
  // be loaded leaves the page without one. Say so instead of showing "live" over an empty page.
  if (!window.Plotly) {
    if (stateEl) {
      stateEl.textContent = "plotly.js did not load";
      stateEl.className = "state error";
    }
    el.className = "plot-error";
    el.textContent = "plotly.js did not load: check the server's --plotly-js option " +
      "(the browser console names the failed request).";
    return;
  }

  var traces = [];         // per plotted trace: {epoch, lastSeq, maxpoints, queue, replaced, line}
  var baseLayout = {};
  var layoutPatch = null;
  var arrivals = [];       // timestamps of accepted points, for the rate
  var drawn = false;
  var writerConnected = null;
  // False while the server's node cannot reach what a cluster's nodes share (a `status` event).
  var upstreamOk = true;
  var source = null;
  // What the feed says (live / reconnecting / writer-disconnected); "history" covers it while the
  // plot shows history.
  var connState = "reconnecting";
  // Single-stream pages: the live window and layout as the feed leaves them, kept up to date
  // while the plot shows history (`trace` is never handed to plotly.js, which changes what it
  // gets).
  var live = { trace: null, layout: {} };
  // Bumped whenever the view changes range (a button, back to live), so that plotly.js lets go
  // of the user's zoom; zooming within a range keeps it.
  var viewRev = 0;
  var listening = false;
  // Our own Plotly.relayout calls still running: their plotly_relayout is not the user's zoom.
  var ownRelayouts = 0;

  function setState(s) {
    if (!stateEl) return;
    stateEl.textContent = s.replace("-", " ");
    stateEl.className = "state " + s;
  }

  function setConn(s) {
    connState = s;
    if (!hist.active) setState(s);
  }

  // "marker.color" -> t.marker.color
  function setPath(obj, path, value) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length - 1; i++) {
      obj[parts[i]] = obj[parts[i]] || {};
      obj = obj[parts[i]];
    }
    obj[parts[parts.length - 1]] = value;
  }

  // plotly.js 3 dropped attributes that figures written for plotly.js 1 and 2 still carry, and
  // the old clients send layouts and traces as their users wrote them: a string `title` (now
  // `title.text`), `titlefont`/`titleside`/`titleposition`/`titleoffset` (now under `title`),
  // `autotick` (now `tickmode`), `bardir` (now `orientation`) and `annotations[].ref` (now
  // `xref`/`yref`). This rewrites them, in place, into their v3 forms.
  var TITLE_PARTS = { titlefont: "font", titleside: "side", titleposition: "position", titleoffset: "offset" };
  var OPAQUE = { customdata: true, meta: true, ids: true }; // user data, never plotly.js attributes

  function modernize(obj) {
    if (Array.isArray(obj)) {
      // Data arrays hold numbers or strings; only arrays of containers (annotations…) are walked.
      if (obj.length && obj[0] !== null && typeof obj[0] === "object") { obj.forEach(modernize); }
      return obj;
    }
    if (obj === null || typeof obj !== "object") return obj;
    if (typeof obj.title === "string" || typeof obj.title === "number") { obj.title = { text: String(obj.title) }; }
    Object.keys(TITLE_PARTS).forEach(function (old) {
      if (obj[old] === undefined) return;
      if (obj.title === null || typeof obj.title !== "object") { obj.title = {}; }
      if (obj.title[TITLE_PARTS[old]] === undefined) { obj.title[TITLE_PARTS[old]] = obj[old]; }
      delete obj[old];
    });
    if (obj.autotick !== undefined) {
      if (obj.tickmode === undefined) { obj.tickmode = obj.autotick ? "auto" : "linear"; }
      delete obj.autotick;
    }
    if (obj.bardir !== undefined) {
      if (obj.orientation === undefined) { obj.orientation = obj.bardir; }
      delete obj.bardir;
    }
    if (Array.isArray(obj.annotations)) {
      obj.annotations.forEach(function (a) {
        if (a && a.ref !== undefined) {
          if (a.xref === undefined) { a.xref = a.ref; }
          if (a.yref === undefined) { a.yref = a.ref; }
          delete a.ref;
        }
      });
    }
    Object.keys(obj).forEach(function (k) {
      if (!OPAQUE[k] && obj[k] !== null && typeof obj[k] === "object") { modernize(obj[k]); }
    });
    return obj;
  }

  // A relayout patch names attributes by path, and setting a container replaces it whole:
  // "title": "t" -> "title.text", "yaxis.titlefont" -> "yaxis.title.font".
  function modernizePatch(patch) {
    var out = {};
    Object.keys(patch).forEach(function (k) {
      var m = /^(.*\.)?(title|titlefont|titleside|titleposition|titleoffset)$/.exec(k);
      var v = patch[k];
      if (m && m[2] === "title" && (typeof v === "string" || typeof v === "number")) {
        out[k + ".text"] = String(v); return;
      }
      if (m && m[2] !== "title") { out[(m[1] || "") + "title." + TITLE_PARTS[m[2]]] = v; return; }
      out[k] = v;
    });
    return modernize(out);
  }

  function traceFrom(attrs, stream) {
    var t = modernize(Object.assign({ type: "scatter", mode: "lines+markers" }, attrs || {}));
    if (stream) {
      Object.keys(stream.window).forEach(function (k) { setPath(t, k, stream.window[k].slice()); });
      Object.keys(stream.line || {}).forEach(function (k) { setPath(t, "line." + k, stream.line[k]); });
      if (!t.x && t.y) { t.x = t.y.map(function (_, i) { return i; }); }
    }
    return t;
  }

  function stateFor(stream) {
    return {
      streamed: !!stream,
      epoch: stream ? stream.epoch : null,
      lastSeq: stream ? stream.last_seq : 0,
      maxpoints: stream ? (stream.maxpoints || 500) : 500,
      queue: {}, replaced: null, line: null
    };
  }

  function draw(data, layout) {
    plot(data, layout);
    drawn = true;
    updateCount();
  }

  function plot(data, layout) {
    var l = modernize(Object.assign({ margin: { t: 40, r: 20, b: 40, l: 50 } }, layout));
    l.uirevision = "v" + viewRev;
    Plotly.react(el, data, l, { responsive: true });
    if (!listening && el.on) {
      el.on("plotly_relayout", onRelayout);
      listening = true;
    }
  }

  function clone(v) { return v === undefined ? v : JSON.parse(JSON.stringify(v)); }

  function pathValue(obj, path) {
    return path.split(".").reduce(function (o, p) { return o && o[p]; }, obj);
  }

  function onSnapshot(s) {
    if (plotMode && s.traces) {
      baseLayout = s.layout || {};
      traces = s.traces.map(function (t) { return stateFor(t.stream); });
      var layout = Object.assign({}, baseLayout);
      s.traces.forEach(function (t) { if (t.stream) { Object.assign(layout, t.stream.layout || {}); } });
      draw(s.traces.map(function (t) { return traceFrom(t.trace, t.stream); }), layout);
    } else if (plotMode) {
      // One trace restarted (reset: lagged or epoch): replace just that trace.
      var i = s.trace;
      var old = el.data[i] || {};
      traces[i] = stateFor(s.stream);
      var attrs = { type: old.type, mode: old.mode, name: old.name };
      Plotly.deleteTraces(el, i);
      Plotly.addTraces(el, traceFrom(attrs, s.stream), i);
      updateCount();
    } else {
      traces = [stateFor(s)];
      baseLayout = s.layout || {};
      live.trace = traceFrom({}, s);
      live.layout = modernize(clone(baseLayout));
      if (!hist.active) drawLive();
    }
  }

  function drawLive() {
    if (live.trace) { draw([clone(live.trace)], live.layout); } else { plot([], live.layout); }
  }

  function onUpdate(u) {
    var i = plotMode ? u.trace : 0;
    var t = traces[i];
    if (!t || u.epoch !== t.epoch || u.from_seq !== t.lastSeq + 1) {
      // Never a silent gap: resubscribe for a fresh snapshot.
      source.close(); connect(); return;
    }
    t.lastSeq = u.to_seq;
    var now = performance.now();
    u.data.forEach(function (op) {
      if (op.append) {
        Object.keys(op.append).forEach(function (k) {
          (t.queue[k] = t.queue[k] || []).push.apply(t.queue[k], op.append[k]);
        });
        arrivals.push(now);
      }
      if (op.replace) { t.replaced = Object.assign(t.replaced || {}, op.replace); }
      if (op.line) { t.line = Object.assign(t.line || {}, op.line); }
      if (op.layout) { layoutPatch = Object.assign(layoutPatch || {}, op.layout); }
    });
  }

  function redraw() {
    var showing = drawn && !hist.active;
    traces.forEach(function (t, i) {
      if (!t.streamed) return;
      if (!plotMode) keepLive(t);
      if (showing) drawOps(t, i);
      t.queue = {}; t.replaced = null; t.line = null;
    });
    if (layoutPatch) {
      var patch = modernizePatch(layoutPatch);
      if (!plotMode) {
        Object.keys(patch).forEach(function (k) { setPath(live.layout, k, clone(patch[k])); });
      }
      if (showing) {
        ownRelayouts++;
        var done = function () { ownRelayouts--; };
        Plotly.relayout(el, patch).then(done, done);
      }
      layoutPatch = null;
    }
    var now = performance.now();
    arrivals = arrivals.filter(function (ts) { return now - ts < 2000; });
    if (rateEl) rateEl.textContent = (arrivals.length / 2).toFixed(1) + " points/s";
    updateCount();
  }

  // Applies what the feed queued for trace `i` to the plot.
  function drawOps(t, i) {
    if (t.replaced || t.line) {
      var upd = {};
      Object.keys(t.replaced || {}).forEach(function (k) { upd[k] = [t.replaced[k].slice(-t.maxpoints)]; });
      Object.keys(t.line || {}).forEach(function (k) { upd["line." + k] = t.line[k]; });
      Plotly.restyle(el, upd, [i]);
    }
    var keys = Object.keys(t.queue).filter(function (k) { return t.queue[k].length; });
    if (keys.length) {
      var trace = el.data[i];
      var ext = {};
      keys.forEach(function (k) {
        // extendTraces needs the attribute to be an array already.
        if (!Array.isArray(pathValue(trace, k))) {
          var init = {}; init[k] = [[]];
          Plotly.restyle(el, init, [i]);
        }
        ext[k] = [t.queue[k]];
      });
      Plotly.extendTraces(el, ext, [i], t.maxpoints);
    }
  }

  // Applies what the feed queued to the kept live window, the same way drawOps does to the plot.
  function keepLive(t) {
    if (!live.trace) return;
    Object.keys(t.replaced || {}).forEach(function (k) { setPath(live.trace, k, t.replaced[k].slice(-t.maxpoints)); });
    Object.keys(t.line || {}).forEach(function (k) { setPath(live.trace, "line." + k, t.line[k]); });
    Object.keys(t.queue).forEach(function (k) {
      var values = pathValue(live.trace, k);
      if (!Array.isArray(values)) { values = []; setPath(live.trace, k, values); }
      values.push.apply(values, t.queue[k]);
      if (values.length > t.maxpoints) values.splice(0, values.length - t.maxpoints);
    });
  }
  setInterval(redraw, 50); // at most 20 redraws per second

  function updateCount() {
    if (!countEl || !el.data || hist.active) return;
    var n = el.data.reduce(function (sum, tr) { return sum + ((tr.y || tr.x || []).length); }, 0);
    countEl.textContent = n + " points";
  }

  // History (single-stream pages). `hist.active` while the plot shows history instead of the
  // live window; `range` is the chosen button ("live", a span in ms, "all"), or "zoom" when the
  // user zoomed the live view; `base` the query of that range; `meta` what the newest answer
  // said about x; `x` and `n` the drawn points' x and their positions in the history; `req` the
  // id of the newest request, whose answer alone is drawn; `endN` where the whole history ended
  // when the server was last asked (a zoom begun on the live view maps x to positions with it).
  var hist = { active: false, range: "live", base: null, meta: null, x: [], n: [], endN: undefined, req: 0, abort: null, timer: null };

  function chooseRange(range) {
    clearTimeout(hist.timer);
    cancelLoad();
    viewRev++;
    hist.range = range;
    pressButton(range);
    if (range === "live") {
      hist.active = false;
      forgetDrawn();
      delete el.dataset.historyStatus;
      if (csvEl) csvEl.hidden = true;
      setState(connState);
      drawLive();
      return;
    }
    hist.active = true;
    setState("history");
    hist.base = { by: "time" };
    if (range !== "all") hist.base.from = String(Date.now() - Number(range));
    load(hist.base, null);
  }

  function pressButton(range) {
    if (!rangeEl) return;
    Array.prototype.forEach.call(rangeEl.querySelectorAll("button"), function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.range === range));
    });
  }

  // A zoom or pan changes the x range (plotly.js says which); a double click asks for autorange.
  function onRelayout(ev) {
    if (plotMode || !rangeEl || ownRelayouts > 0 || !ev) return;
    var keys = Object.keys(ev);
    var ranged = keys.some(function (k) { return k.indexOf("xaxis.range") === 0; }) ||
      !!(ev.xaxis && ev.xaxis.range);
    var auto = ev["xaxis.autorange"] === true || !!(ev.xaxis && ev.xaxis.autorange === true);
    if (!ranged && !auto) return;
    if (!ranged) {
      if (!hist.active) return; // the live view autoranges by itself
      if (hist.range === "zoom") { chooseRange("live"); return; }
      debounce(function () { load(hist.base, null); });
      return;
    }
    if (!hist.active) {
      // Zooming the live view: the plot stops following the feed and shows that range.
      hist.active = true;
      hist.range = "zoom";
      hist.base = null;
      forgetDrawn();
      pressButton("zoom");
      setState("history");
    }
    cancelLoad();
    debounce(loadZoomed);
  }

  function debounce(fn) {
    clearTimeout(hist.timer);
    hist.timer = setTimeout(fn, ZOOM_DEBOUNCE_MS);
  }

  // Fetches the x range the plot shows now. Numeric and date x that never decrease are
  // bucketed by x on the server, and fetched by x; anything else by position (n), found from
  // the points drawn.
  function loadZoomed() {
    var ax = el._fullLayout && el._fullLayout.xaxis;
    if (!ax || !ax.range) return;
    var range = ax.range.slice();
    var lo = ax.r2c(range[0]), hi = ax.r2c(range[1]);
    if (lo > hi) { var swap = lo; lo = hi; hi = swap; }
    var meta = hist.meta;
    if (meta && meta.bucketed_by === "x" && (meta.x_kind === "number" || meta.x_kind === "date")) {
      var q = { by: "x" };
      if (meta.x_kind === "date") {
        q.from = dateParam(Math.floor(lo));
        q.to = dateParam(Math.ceil(hi));
      } else {
        q.from = String(lo);
        q.to = String(hi);
      }
      load(q, range);
      return;
    }
    var span = hist.x.length ? nSpanDrawn(ax, lo, hi) : nSpanLive(ax, lo, hi);
    if (span) {
      // Numbers and dates keep their place on the axis; categories are placed by their order
      // in the data drawn, and points without x by their index in the live window or their
      // position in history, so the answer is shown whole instead.
      var stable = meta.x_kind === "number" || meta.x_kind === "date";
      load({ by: "n", from: String(span[0]), to: String(span[1]) }, stable ? range : null);
    } else if (!meta) {
      // The live window says nothing about positions: ask the server what x is first.
      var id = ++hist.req;
      request({ by: "n", max_points: "1" }, id).then(function (a) {
        if (a && id === hist.req) { hist.meta = a; hist.endN = a.end_n; loadZoomed(); }
      });
    }
  }

  // The plot shows the live window again: what was drawn from history says nothing about it.
  function forgetDrawn() {
    hist.meta = null;
    hist.x = [];
    hist.n = [];
  }

  // The positions of the drawn history points inside [lo, hi] (axis coordinates).
  function nSpanDrawn(ax, lo, hi) {
    if (hist.meta.x_kind === "none") return [Math.max(0, Math.ceil(lo)), Math.max(0, Math.floor(hi))];
    var from = null, to = null, before = null, after = null;
    for (var i = 0; i < hist.x.length; i++) {
      var c = ax.d2c(hist.x[i]), n = hist.n[i];
      if (c >= lo && c <= hi) {
        from = from === null ? n : Math.min(from, n);
        to = to === null ? n : Math.max(to, n);
      } else if (c < lo) {
        before = n;
      } else if (after === null) {
        after = n;
      }
    }
    if (from === null) { from = before === null ? 0 : before; to = after === null ? from : after; }
    return [from, to];
  }

  // The live window holds the newest points: its i-th of k is at n = end - k + i, once the server
  // said where the history ends (hist.endN).
  function nSpanLive(ax, lo, hi) {
    if (!hist.meta || hist.endN === undefined || !live.trace) return null;
    var xs = live.trace.x || [];
    var first = hist.endN - xs.length;
    var from = null, to = null;
    for (var i = 0; i < xs.length; i++) {
      var c = ax.d2c(xs[i]);
      if (c >= lo && c <= hi) {
        if (from === null) from = first + i;
        to = first + i;
      }
    }
    return from === null ? null : [Math.max(0, from), Math.max(0, to)];
  }

  function cancelLoad() {
    hist.req++;
    if (hist.abort) { hist.abort.abort(); hist.abort = null; }
  }

  // Fetches `q` at the plot's width and draws the answer if it is still the newest request.
  // `range`: the x range to keep showing (a zoom), or null to show all of the answer.
  function load(q, range) {
    cancelLoad();
    var id = hist.req;
    var sized = Object.assign({ max_points: String(maxPoints()) }, q);
    el.dataset.historyStatus = "loading";
    request(sized, id).then(function (a) {
      if (!a || id !== hist.req || !hist.active) return;
      drawHistory(a, q, range);
    });
  }

  function request(q, id) {
    var controller = window.AbortController ? new AbortController() : null;
    hist.abort = controller;
    return fetch(historyUrl(q, "json"), controller ? { signal: controller.signal } : {})
      .then(function (r) {
        return r.json().then(function (body) {
          // Errors come as {"errors": [{"message": ...}]}, as everywhere on this server.
          var why = body && body.errors && body.errors[0] && body.errors[0].message;
          if (!r.ok) throw new Error(r.status + " " + (why || r.statusText));
          return body;
        }, function () { throw new Error(r.status + " " + r.statusText); });
      })
      .catch(function (err) {
        if (id !== hist.req || (err && err.name === "AbortError")) return null;
        el.dataset.historyStatus = "error";
        if (countEl) countEl.textContent = "history failed: " + err.message;
        return null;
      });
  }

  function drawHistory(a, q, range) {
    var k = a.points.length;
    var xs = new Array(k), ys = new Array(k), ns = new Array(k);
    a.points.forEach(function (p, i) {
      ns[i] = p[0];
      xs[i] = p[3] === null ? p[0] : p[3]; // a point without x is drawn at its position
      ys[i] = p[4];
    });
    hist.meta = { x_kind: a.x_kind, bucketed_by: a.bucketed_by };
    hist.x = xs;
    hist.n = ns;
    var trace = {
      type: "scatter",
      // Markers would mark bucket extremes as if they were points.
      mode: a.downsampled ? "lines" : (live.trace && live.trace.mode) || "lines+markers",
      x: xs, y: ys
    };
    if (live.trace && live.trace.line) trace.line = clone(live.trace.line);
    var layout = clone(live.layout) || {};
    layout.xaxis = Object.assign({}, layout.xaxis);
    if (range) {
      layout.xaxis.range = range;
      layout.xaxis.autorange = false;
    } else {
      // A new ui revision, or plotly.js would keep the range the user last zoomed to.
      viewRev++;
      delete layout.xaxis.range;
      layout.xaxis.autorange = true;
    }
    plot([trace], layout);
    drawn = false; // the live window is not on the plot any more
    if (countEl) countEl.textContent = k + " points" + (a.downsampled ? " (downsampled)" : "");
    if (csvEl) {
      csvEl.href = historyUrl(q, "csv");
      csvEl.download = (nameEl ? nameEl.textContent : "stream") + ".csv";
      csvEl.hidden = false;
    }
    el.dataset.historyStatus = "ready";
  }

  function historyUrl(q, format) {
    var params = Object.assign({}, q, { format: format });
    return el.dataset.history + "?" + Object.keys(params).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
  }

  // 4 points a pixel column (a bucket's first, last, lowest and highest).
  function maxPoints() {
    return Math.max(1, Math.min(MAX_POINTS, 4 * Math.round(el.clientWidth || 1000)));
  }

  // A date as the route reads it: "YYYY-MM-DD HH:MM:SS.ffffff" (plotly.js's own format, UTC).
  function dateParam(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace("Z", "000");
  }

  if (rangeEl && !plotMode && el.dataset.history) {
    rangeEl.addEventListener("click", function (e) {
      var b = e.target.closest("button");
      if (b && b.dataset.range) chooseRange(b.dataset.range);
    });
  }

  function connect() {
    setConn("reconnecting");
    source = new EventSource(el.dataset.events);
    source.addEventListener("open", function () { setConn(writerConnected === false ? "writer-disconnected" : "live"); });
    source.addEventListener("status", function (e) {
      upstreamOk = JSON.parse(e.data).upstream !== "reconnecting";
      setConn(!upstreamOk ? "reconnecting" : writerConnected === false ? "writer-disconnected" : "live");
    });
    source.addEventListener("snapshot", function (e) { onSnapshot(JSON.parse(e.data)); });
    source.addEventListener("update", function (e) { onUpdate(JSON.parse(e.data)); });
    source.addEventListener("reset", function (e) {
      var r = JSON.parse(e.data);
      if (r.reason === "shutdown") { setConn("reconnecting"); }
    });
    source.addEventListener("error", function () { setConn("reconnecting"); });
  }
  connect();

  // The writer's state, from the inspection route (single-stream pages).
  function poll() {
    if (!el.dataset.inspect) return;
    fetch(el.dataset.inspect).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
      if (!s) return;
      writerConnected = s.writer_connected;
      if (source && source.readyState === 1 && upstreamOk) { setConn(writerConnected ? "live" : "writer-disconnected"); }
    }).catch(function () {});
  }
  poll(); setInterval(poll, 2000);

  // The longest the route answers (its max_points); a zoom waits this long for the next move.
  var MAX_POINTS = 100000;
  var ZOOM_DEBOUNCE_MS = 150;
})();
