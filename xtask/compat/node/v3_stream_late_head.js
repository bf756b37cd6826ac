'use strict';
// V3: node opens the connection at `stream()` but sends its head only with the first `write()` (K11).
// On a server with the default 60 s pre-head timeout (L1) a first write 3 s late is accepted; on a server
// with `--pre-head-timeout 2s` (COMPAT_SLOW_PORT) a stream() that never writes is closed after 2 s
// (± 1) without a response, which node reports as "socket hang up".

const h = require('./harness');
const plotly = require('plotly')('demo', 'demokey123');

const slowPort = Number(process.env.COMPAT_SLOW_PORT);

h.run(async () => {
  const late = await new Promise((resolve) => {
    const stream = plotly.stream({ token: 'v3nodelate', streamHost: h.host, port: h.port }, (err, res) =>
      resolve({ err, res }),
    );
    setTimeout(() => {
      stream.write(JSON.stringify({ x: 1, y: 1 }) + '\n');
      stream.end();
    }, 3000);
  });
  h.check(!late.err && late.res.statusCode === 200, () => 'the late write got ' + (late.err || JSON.stringify(late.res)));
  const state = await h.inspect('v3nodelate');
  h.check(state && state.last_seq === 1, () => 'the late line was not applied: ' + JSON.stringify(state));

  const started = Date.now();
  const silent = await new Promise((resolve) => {
    plotly.stream({ token: 'v3nodenone', streamHost: h.host, port: slowPort }, (err, res) => resolve({ err, res }));
  });
  const secs = (Date.now() - started) / 1000;
  h.check(silent.err, () => 'a stream() without a write got a response: ' + JSON.stringify(silent.res));
  h.check(
    silent.err.code === 'ECONNRESET' && silent.err.message === 'socket hang up',
    () => `the silent stream() got ${silent.err.code}: ${silent.err.message}`,
  );
  h.check(secs >= 1 && secs <= 3, `the silent stream() was closed after ${secs} s, not 2 s`);
  return `a write 3 s after stream() accepted; a stream() that never writes closed after ${secs.toFixed(2)} s (L1 = 2 s), "socket hang up"`;
});
