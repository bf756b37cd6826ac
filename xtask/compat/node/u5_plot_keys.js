'use strict';
// U5: keys mode (`serve --users FILE`): node `plot()` posts `un` and `key` to /clientresp over HTTPS
// (COMPAT_TLS_PORT), first with a wrong key, then with the one `plotstream user add` printed.
// Wrong: the server answers 200 with a non-empty `error` and no `stream-status`, so node calls back
// with an Error whose message is that `error` (its `statusCode` is the HTTP 200, its `body` the
// answer), learns no stream host, and nothing is created. Right: 'All Streams Go!', a /~demo/<12
// digits> url, and `stream()` to the user's stream id arrives (found by count in GET /api/streams,
// which lists no write token).

const h = require('./harness');

const tlsPort = Number(process.env.COMPAT_TLS_PORT);
const token = h.account.streamIds[0];
const data = [{ x: [], y: [], type: 'scatter', mode: 'lines+markers', stream: { token, maxpoints: 80 } }];
const options = { fileopt: 'overwrite', filename: 'node-streaming' };
const MESSAGE = 'invalid username or api key';

function plot(client) {
  return new Promise((resolve) => client.plot(data, options, (err, msg) => resolve({ err, msg })));
}

h.run(async () => {
  h.check(token, 'no stream id in COMPAT_STREAM_IDS');
  const connect = (apiKey) => require('plotly')({ username: h.account.username, apiKey, host: h.host, port: tlsPort });

  const wrong = connect('wrongkey123');
  const refused = await plot(wrong);
  h.check(refused.err instanceof Error, () => 'plot() with a wrong key did not fail: ' + JSON.stringify(refused.msg));
  const err = refused.err;
  h.check(
    err.message === MESSAGE && err.statusCode === 200 && err.body && err.body.error === MESSAGE,
    () => `the error: message ${JSON.stringify(err.message)}, statusCode ${err.statusCode}, body ${JSON.stringify(err.body)}`,
  );
  h.check(!('stream-status' in err.body), () => 'a refused plot() has a stream-status: ' + JSON.stringify(err.body));
  h.check(wrong.streamHost === '', () => 'node learned a stream host from a refused plot(): ' + wrong.streamHost);
  const untouched = await h.streams();
  h.check(untouched.length === 0, () => 'a refused plot() created streams: ' + JSON.stringify(untouched));

  const right = connect(h.account.apiKey);
  const plotted = await plot(right);
  h.check(!plotted.err, () => 'plot() with the right key failed: ' + (plotted.err && plotted.err.stack));
  const msg = plotted.msg;
  h.check(msg.error === '' && msg.streamstatus === 'All Streams Go!', () => 'plot() got ' + JSON.stringify(msg));
  h.check(/\/~demo\/\d{12}$/.test(msg.url), () => 'plot() returned the url ' + JSON.stringify(msg.url));
  const page = await h.get(new URL(msg.url).pathname);
  h.check(page.status === 200, () => `GET ${msg.url} answered ${page.status}`);

  const streamed = await new Promise((resolve) => {
    const stream = right.stream({ token, port: h.port }, (e, res) => resolve({ err: e, res }));
    for (let i = 0; i < 3; i++) stream.write(JSON.stringify({ x: i, y: i }) + '\n');
    stream.end();
  });
  h.check(!streamed.err && streamed.res.statusCode === 200, () => 'the stream got ' + (streamed.err || JSON.stringify(streamed.res)));
  const listing = await h.streams();
  h.check(!JSON.stringify(listing).includes(token), () => 'GET /api/streams shows the write token: ' + JSON.stringify(listing));
  h.check(listing.length === 1 && listing[0].last_seq === 3, () => 'GET /api/streams: ' + JSON.stringify(listing));
  const state = await h.inspect(listing[0].id);
  h.check(state && state.maxpoints === 80, () => 'the plotted stream: ' + JSON.stringify(state));
  return `wrong key: Error(${JSON.stringify(err.message)}), statusCode ${err.statusCode}, nothing created; right key: ${msg.streamstatus}, url ${msg.url}, 3 points streamed`;
});
