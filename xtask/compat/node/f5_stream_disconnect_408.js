'use strict';
// F5: `--fault disconnect:after=3,status=408 --linger 100ms` against npm plotly@1.0.6 `stream()`. The server
// ends the request right after its 3rd line with `408 timeout on active data`, long before any idle
// timeout. node's callback fires once, with an Error whose statusCode is 408 and whose message comes
// from node's own statusmsgs.json; the request is destroyed, a later write returns false, and node
// never reconnects (docs/protocol.md §5.2): the window keeps lines 1-3 and the server saw one
// connection.

const h = require('./harness');
const sim = require('./simulator');
const plotly = require('plotly')('demo', 'demokey123');

const token = 'f5node4081';

h.run(async () => {
  const before = await sim.connectionsTotal();
  const calls = [];
  let stream;
  let thirdSent;
  const first = await new Promise((resolve) => {
    stream = plotly.stream({ token, streamHost: h.host, port: h.port }, (err, res) => {
      calls.push(err ? `${err.statusCode} ${err.message}` : JSON.stringify(res));
      resolve({ err, res, at: performance.now() });
    });
    (async () => {
      for (let x = 1; x <= 3; x++) {
        stream.write(JSON.stringify({ x, y: x }) + '\n', () => {
          if (x === 3) thirdSent = performance.now();
        });
        await h.sleep(50);
      }
    })();
  });
  h.check(first.err, () => 'the callback got ' + JSON.stringify(first.res));
  h.check(
    first.err.statusCode === 408 && first.err.message === 'timeout on active data',
    () => `the callback got ${first.err.statusCode}: ${first.err.message}`,
  );
  const secs = (first.at - thirdSent) / 1000;
  h.check(secs >= 0 && secs < 0.5, `the 408 came ${secs.toFixed(3)} s after the 3rd line`);
  await h.sleep(300);
  const accepted = stream.write(JSON.stringify({ x: 4, y: 4 }) + '\n');
  await h.sleep(300);
  h.check(accepted === false && stream.destroyed, 'a write after the 408 was accepted');
  h.check(calls.length === 1, () => 'the callback was called more than once: ' + calls.join(' | '));
  const state = await h.inspect(token);
  h.check(
    state && JSON.stringify(state.window.x) === '[1,2,3]' && state.last_seq === 3 && !state.writer_connected,
    () => 'after the 408: ' + JSON.stringify(state),
  );
  const ends = await sim.faultsInjected('disconnect');
  h.check(ends === 1, `the server counted ${ends} disconnects, not 1`);
  // Besides the stream: the inspection, the disconnect count and this request.
  const connections = (await sim.connectionsTotal()) - before - 3;
  h.check(connections === 1, `${connections} stream connections: node reconnected`);
  return `408 "timeout on active data" ${secs.toFixed(3)} s after the 3rd line; callback once; write 4 returns false; window [1,2,3]; one connection, no reconnect`;
});
