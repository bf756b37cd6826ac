'use strict';
// F6: `--fault delay:ms=300` against npm plotly@1.0.6 `stream()`, watched by a viewer of the stream's
// feed with `?interval=0` (each update sent at once). The server holds every accepted line 300 ms
// before it applies and publishes it, so each point reaches the viewer 300 ms or more after node
// wrote it, and every point arrives, in order; node's callback still gets the clean `200`.
//
// Spaced writes (0.5 s apart, longer than the delay) each arrive 300 ms (+ at most SLACK) late. A
// burst (five writes at once) arrives in full and in order, each at least 300 ms late; how late is
// reported, not checked (the server holds one line at a time per connection, so the k-th line of a
// burst is visible about k x 300 ms after it was written).

const h = require('./harness');
const sim = require('./simulator');
const plotly = require('plotly')('demo', 'demokey123');

const token = 'f6nodedly1';
const DELAY = 300;
const SLACK = 150;
const SPACED = [1, 2, 3, 4];
const BURST = [11, 12, 13, 14, 15];

h.run(async () => {
  let stream;
  const done = new Promise((resolve) => {
    stream = plotly.stream({ token, streamHost: h.host, port: h.port }, (err, res) => resolve({ err, res }));
  });
  const sent = new Map();
  const write = (x) => {
    const at = performance.now();
    stream.write(JSON.stringify({ x, y: x }) + '\n');
    sent.set(x, at);
  };
  // node sends its head with the first write, which creates the stream; the viewer subscribes then.
  write(0);
  for (let tries = 0; !(await h.inspect(token)); tries++) {
    h.check(tries < 50, 'the stream did not appear within 1 s of the first write');
    await h.sleep(20);
  }
  const viewer = await sim.watch(token, 0);
  await h.sleep(DELAY + 100);
  for (const x of SPACED) {
    write(x);
    await h.sleep(500);
  }
  for (const x of BURST) write(x);
  stream.end();
  const result = await done;
  h.check(!result.err && result.res.statusCode === 200, () => 'the callback got ' + (result.err || JSON.stringify(result.res)));
  await h.sleep(100);
  viewer.close();

  const state = await h.inspect(token);
  const want = [0, ...SPACED, ...BURST];
  h.check(JSON.stringify(state.window.x) === JSON.stringify(want), () => 'window x ' + JSON.stringify(state.window.x));
  const late = (x) => viewer.arrivals.get(x) - sent.get(x);
  for (const x of [...SPACED, ...BURST]) {
    h.check(viewer.arrivals.has(x), () => `the viewer never got x=${x}; got ${JSON.stringify([...viewer.arrivals.keys()])}`);
    h.check(late(x) >= DELAY - 5, () => `x=${x} reached the viewer ${late(x).toFixed(0)} ms after its write, before the ${DELAY} ms delay`);
  }
  for (const x of SPACED) {
    h.check(late(x) <= DELAY + SLACK, () => `spaced x=${x} reached the viewer ${late(x).toFixed(0)} ms after its write`);
  }
  const order = [...viewer.arrivals.keys()].filter((x) => x > 0);
  h.check(JSON.stringify(order) === JSON.stringify([...SPACED, ...BURST]), () => 'viewer order ' + JSON.stringify(order));
  const delays = await sim.faultsInjected('delay');
  h.check(delays === want.length, `the server counted ${delays} delayed lines, not ${want.length}`);
  const ms = (xs) => xs.map((x) => late(x).toFixed(0)).join('/');
  return `every point reached the viewer, in order, delayed: spaced writes ${ms(SPACED)} ms; a burst of ${BURST.length} ${ms(BURST)} ms; callback 200`;
});
