'use strict';
// V20: node `plot()` posts to /clientresp over HTTPS (COMPAT_TLS_PORT, certificate trusted through
// NODE_EXTRA_CA_CERTS), gets error '' and 'All Streams Go!', and learns the stream host from
// 'stream-host'; `stream({token, port})` without a streamHost then streams to the learned host.
// The server runs with `--public-url COMPAT_SERVER`, so the figure's url names the plain listener;
// the page is served there and through the TLS port.

const https = require('https');
const h = require('./harness');

const tlsPort = Number(process.env.COMPAT_TLS_PORT);
const plotly = require('plotly')({ username: 'demo', apiKey: 'demokey123', host: h.host, port: tlsPort });
const token = 'v20nodetls';

function getTls(path) {
  return new Promise((resolve, reject) => {
    https
      .get({ host: h.host, port: tlsPort, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', reject);
  });
}

h.run(async () => {
  const data = [{ x: [], y: [], type: 'scatter', mode: 'lines+markers', stream: { token, maxpoints: 80 } }];
  const plotted = await new Promise((resolve) =>
    plotly.plot(data, { fileopt: 'overwrite', filename: 'node-streaming' }, (err, msg) => resolve({ err, msg })),
  );
  h.check(!plotted.err, () => 'plot() failed: ' + (plotted.err && plotted.err.stack));
  const msg = plotted.msg;
  h.check(msg.error === '' && msg.streamstatus === 'All Streams Go!', () => 'plot() got ' + JSON.stringify(msg));
  const match = /^(.*)\/~demo\/(\d+)$/.exec(msg.url);
  h.check(match && match[1] === process.env.COMPAT_SERVER, () => 'plot() returned the url ' + JSON.stringify(msg.url));
  const path = `/~demo/${match[2]}`;
  h.check(plotly.streamHost === h.host, () => 'node learned the stream host ' + JSON.stringify(plotly.streamHost));

  for (const [how, page] of [['plain', await h.get(path)], ['TLS', await getTls(path)]]) {
    h.check(
      page.status === 200 && page.body.includes(`/api/plots/demo:${match[2]}/events`),
      () => `GET ${path} (${how}) answered ${page.status}`,
    );
  }

  const streamed = await new Promise((resolve) => {
    const stream = plotly.stream({ token, port: h.port }, (err, res) => resolve({ err, res }));
    for (let i = 0; i < 3; i++) stream.write(JSON.stringify({ x: i, y: i }) + '\n');
    stream.end();
  });
  h.check(!streamed.err && streamed.res.statusCode === 200, () => 'the stream got ' + (streamed.err || JSON.stringify(streamed.res)));
  const state = await h.inspect(token);
  h.check(state && state.maxpoints === 80 && state.last_seq === 3, () => 'the plotted token: ' + JSON.stringify(state));
  return `plot() over TLS: ${msg.streamstatus}, url ${msg.url}; stream() to the learned host ${plotly.streamHost}: 200, 3 points, maxpoints 80`;
});
