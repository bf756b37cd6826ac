// plotstream live viewer: subscribes to the stream's SSE feed, applies the snapshot with
// Plotly.react and updates with Plotly.extendTraces, redrawing at most 20 times per second.
(function () {
  "use strict";
  var el = document.getElementById("plot");
  var stateEl = document.getElementById("state");
  var rateEl = document.getElementById("rate");
  var countEl = document.getElementById("count");
  var maxpoints = 500;
  var epoch = null;
  var lastSeq = 0;
  var queue = { x: [], y: [] };
  var extra = {};          // other appended attributes: name -> values
  var replaced = null;     // attribute -> array, from the newest replace
  var layoutPatch = null;
  var arrivals = [];       // timestamps of accepted points, for the rate
  var drawn = false;
  var writerConnected = null;

  // Without plotly.js (no `npm install` in viewer/, and no network for the CDN fallback) nothing
  // can be drawn; say so instead of showing "live" over an empty page.
  if (!window.Plotly) {
    stateEl.textContent = "plotly.js did not load";
    stateEl.className = "state error";
    el.className = "plot-error";
    el.textContent = "plotly.js did not load: run `npm install` in the server's viewer/ directory, " +
      "or start the server with --plotly-js.";
    return;
  }

  function setState(s) {
    stateEl.textContent = s.replace("-", " ");
    stateEl.className = "state " + s;
  }

  function traceFrom(window) {
    var t = { type: "scatter", mode: "lines+markers" };
    Object.keys(window).forEach(function (k) { t[k] = window[k].slice(); });
    if (!t.x && t.y) { t.x = t.y.map(function (_, i) { return i; }); }
    return t;
  }

  function onSnapshot(s) {
    epoch = s.epoch; lastSeq = s.last_seq; maxpoints = s.maxpoints || 500;
    queue = { x: [], y: [] }; extra = {}; replaced = null; layoutPatch = null;
    var layout = Object.assign({ margin: { t: 40, r: 20, b: 40, l: 50 }, uirevision: "keep" }, s.layout || {});
    Plotly.react(el, [traceFrom(s.window)], layout, { responsive: true });
    drawn = true;
    countEl.textContent = (s.window.y || s.window.x || []).length + " points";
  }

  function onUpdate(u) {
    if (u.epoch !== epoch || u.from_seq !== lastSeq + 1) {
      // Never a silent gap: resubscribe for a fresh snapshot.
      source.close(); connect(); return;
    }
    lastSeq = u.to_seq;
    var now = performance.now();
    u.data.forEach(function (op) {
      if (op.append) {
        Object.keys(op.append).forEach(function (k) {
          var target = (k === "x" || k === "y") ? queue : extra;
          (target[k] = target[k] || []).push.apply(target[k], op.append[k]);
        });
        arrivals.push(now);
      }
      if (op.replace) { replaced = Object.assign(replaced || {}, op.replace); }
      if (op.layout) { layoutPatch = Object.assign(layoutPatch || {}, op.layout); }
    });
  }

  function redraw() {
    if (!drawn) return;
    if (replaced) {
      var upd = {};
      Object.keys(replaced).forEach(function (k) { upd[k] = [replaced[k].slice(-maxpoints)]; });
      Plotly.restyle(el, upd, [0]);
      replaced = null;
    }
    var keys = Object.keys(queue).filter(function (k) { return queue[k].length; })
      .concat(Object.keys(extra).filter(function (k) { return extra[k].length; }));
    if (keys.length) {
      var upd2 = {};
      keys.forEach(function (k) { upd2[k] = [(queue[k] || extra[k])]; });
      Plotly.extendTraces(el, upd2, [0], maxpoints);
      queue = { x: [], y: [] }; extra = {};
    }
    if (layoutPatch) { Plotly.relayout(el, layoutPatch); layoutPatch = null; }
    var now = performance.now();
    arrivals = arrivals.filter(function (t) { return now - t < 2000; });
    rateEl.textContent = (arrivals.length / 2).toFixed(1) + " points/s";
    var trace = el.data && el.data[0];
    if (trace) { countEl.textContent = ((trace.y || trace.x || []).length) + " points"; }
  }
  setInterval(redraw, 50); // at most 20 redraws per second

  var source = null;
  function connect() {
    setState("reconnecting");
    source = new EventSource(el.dataset.events);
    source.addEventListener("open", function () { setState(writerConnected === false ? "writer-disconnected" : "live"); });
    source.addEventListener("snapshot", function (e) { onSnapshot(JSON.parse(e.data)); });
    source.addEventListener("update", function (e) { onUpdate(JSON.parse(e.data)); });
    source.addEventListener("reset", function (e) {
      var r = JSON.parse(e.data);
      if (r.reason === "shutdown") { setState("reconnecting"); }
    });
    source.addEventListener("error", function () { setState("reconnecting"); });
  }
  connect();

  // The writer's state, from the inspection route.
  function poll() {
    fetch(el.dataset.inspect).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
      if (!s) return;
      writerConnected = s.writer_connected;
      if (source && source.readyState === 1) { setState(writerConnected ? "live" : "writer-disconnected"); }
    }).catch(function () {});
  }
  poll(); setInterval(poll, 2000);
})();
