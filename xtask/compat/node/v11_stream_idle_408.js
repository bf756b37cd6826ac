'use strict';
// V11 for node: a stream that goes quiet past `--idle-timeout 2s` is ended with a mid-stream 408.
// node's callback gets an Error with statusCode 408 and the message of its own statusmsgs.json,
// 'timeout on active data'; the client never reconnects (docs/protocol.md §5.2).

const h = require('./harness');
const plotly = require('plotly')('demo', 'demokey123');

const token = 'v11nodeidl';

h.run(async () => {
  let lineSent;
  const calls = [];
  const first = await new Promise((resolve) => {
    const stream = plotly.stream({ token, streamHost: h.host, port: h.port }, (err, res) => {
      calls.push(err ? `${err.statusCode} ${err.message}` : JSON.stringify(res));
      resolve({ err, res, stream });
    });
    stream.write(JSON.stringify({ x: 1, y: 1 }) + '\n', () => (lineSent = Date.now()));
  });
  const secs = (Date.now() - lineSent) / 1000;
  h.check(first.err, () => 'the idle stream got ' + JSON.stringify(first.res));
  h.check(
    first.err.statusCode === 408 && first.err.message === 'timeout on active data',
    () => `the callback got ${first.err.statusCode}: ${first.err.message}`,
  );
  h.check(secs >= 1.5 && secs <= 2.5, `the 408 came ${secs} s after the line, not 2 s`);
  // Once the server has closed, the request is destroyed: a later write is refused, node never
  // reconnects, and the callback is not called again.
  await h.sleep(300);
  const accepted = first.stream.write(JSON.stringify({ x: 2, y: 2 }) + '\n');
  await h.sleep(300);
  h.check(accepted === false && first.stream.destroyed, 'a write after the 408 was accepted');
  h.check(calls.length === 1, () => 'the callback was called more than once: ' + calls.join(' | '));
  const state = await h.inspect(token);
  h.check(state && state.last_seq === 1 && !state.writer_connected, () => 'after the 408: ' + JSON.stringify(state));
  return `mid-stream 408 "timeout on active data" ${secs.toFixed(2)} s after the last line; a later write returns false; callbacks: ${calls.join(' | ')}`;
});
