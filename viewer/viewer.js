// plotstream live viewer. One page follows one stream (/streams/{token}) or every trace of a
// figure (/~user/n/, data-mode="plot"). It applies snapshots with Plotly.react and updates with
// Plotly.extendTraces (each trace's maxpoints), redrawing at most 20 times per second, and never
// shows a silent gap: a sequence break or a reset brings a fresh snapshot.
(function () {
  "use strict";
  var el = document.getElementById("plot");
  var stateEl = document.getElementById("state");
  var rateEl = document.getElementById("rate");
  var countEl = document.getElementById("count");
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

  function setState(s) {
    if (!stateEl) return;
    stateEl.textContent = s.replace("-", " ");
    stateEl.className = "state " + s;
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
    var l = modernize(Object.assign({ margin: { t: 40, r: 20, b: 40, l: 50 }, uirevision: "keep" }, layout));
    Plotly.react(el, data, l, { responsive: true });
    drawn = true;
    updateCount();
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
      draw([traceFrom({}, s)], baseLayout);
    }
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
    if (!drawn) return;
    traces.forEach(function (t, i) {
      if (!t.streamed) return;
      if (t.replaced || t.line) {
        var upd = {};
        Object.keys(t.replaced || {}).forEach(function (k) { upd[k] = [t.replaced[k].slice(-t.maxpoints)]; });
        Object.keys(t.line || {}).forEach(function (k) { upd["line." + k] = t.line[k]; });
        Plotly.restyle(el, upd, [i]);
        t.replaced = null; t.line = null;
      }
      var keys = Object.keys(t.queue).filter(function (k) { return t.queue[k].length; });
      if (keys.length) {
        var trace = el.data[i];
        var ext = {};
        keys.forEach(function (k) {
          // extendTraces needs the attribute to be an array already.
          var cur = k.split(".").reduce(function (o, p) { return o && o[p]; }, trace);
          if (!Array.isArray(cur)) {
            var init = {}; init[k] = [[]];
            Plotly.restyle(el, init, [i]);
          }
          ext[k] = [t.queue[k]];
        });
        Plotly.extendTraces(el, ext, [i], t.maxpoints);
        t.queue = {};
      }
    });
    if (layoutPatch) { Plotly.relayout(el, modernizePatch(layoutPatch)); layoutPatch = null; }
    var now = performance.now();
    arrivals = arrivals.filter(function (ts) { return now - ts < 2000; });
    if (rateEl) rateEl.textContent = (arrivals.length / 2).toFixed(1) + " points/s";
    updateCount();
  }
  setInterval(redraw, 50); // at most 20 redraws per second

  function updateCount() {
    if (!countEl || !el.data) return;
    var n = el.data.reduce(function (sum, tr) { return sum + ((tr.y || tr.x || []).length); }, 0);
    countEl.textContent = n + " points";
  }

  function connect() {
    setState("reconnecting");
    source = new EventSource(el.dataset.events);
    source.addEventListener("open", function () { setState(writerConnected === false ? "writer-disconnected" : "live"); });
    source.addEventListener("status", function (e) {
      upstreamOk = JSON.parse(e.data).upstream !== "reconnecting";
      setState(!upstreamOk ? "reconnecting" : writerConnected === false ? "writer-disconnected" : "live");
    });
    source.addEventListener("snapshot", function (e) { onSnapshot(JSON.parse(e.data)); });
    source.addEventListener("update", function (e) { onUpdate(JSON.parse(e.data)); });
    source.addEventListener("reset", function (e) {
      var r = JSON.parse(e.data);
      if (r.reason === "shutdown") { setState("reconnecting"); }
    });
    source.addEventListener("error", function () { setState("reconnecting"); });
  }
  connect();

  // The writer's state, from the inspection route (single-stream pages).
  function poll() {
    if (!el.dataset.inspect) return;
    fetch(el.dataset.inspect).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
      if (!s) return;
      writerConnected = s.writer_connected;
      if (source && source.readyState === 1 && upstreamOk) { setState(writerConnected ? "live" : "writer-disconnected"); }
    }).catch(function () {});
  }
  poll(); setInterval(poll, 2000);
})();
