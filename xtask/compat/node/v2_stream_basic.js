'use strict';
// V2: npm plotly@1.0.6 `stream({token, streamHost, port})`, five writes, a heartbeat and `end()`.
// The server answers 200 and node's callback gets {msg: 'healthy endpoint disconnect', statusCode: 200}.

const h = require('./harness');
const plotly = require('plotly')('demo', 'demokey123');

const token = 'v2nodebas1';

h.run(async () => {
  const result = await new Promise((resolve) => {
    const stream = plotly.stream({ token, streamHost: h.host, port: h.port }, (err, res) =>
      resolve({ err, res }),
    );
    for (let i = 0; i < 5; i++) stream.write(JSON.stringify({ x: i, y: i * i }) + '\n');
    stream.write('\n');
    stream.end();
  });
  h.check(!result.err, () => 'the callback got an error: ' + result.err);
  h.check(
    result.res && result.res.statusCode === 200 && result.res.msg === 'healthy endpoint disconnect',
    () => 'the callback got ' + JSON.stringify(result.res),
  );
  const state = await h.inspect(token);
  h.check(state && state.last_seq === 5, () => 'last_seq is not 5: ' + JSON.stringify(state));
  h.check(
    JSON.stringify(state.window) === JSON.stringify({ x: [0, 1, 2, 3, 4], y: [0, 1, 4, 9, 16] }),
    () => 'window ' + JSON.stringify(state.window),
  );
  return 'callback ' + JSON.stringify(result.res) + '; 5 points';
});
