'use strict';
// What the node fault cases F5 and F6 share: the server's counters (`GET /metrics`) and a viewer of a
// stream's SSE feed (`GET /api/streams/{token}/events`), on top of harness.js.

const http = require('http');
const h = require('./harness');

// `GET /metrics` as a Map of 'name' or 'name{labels}' to its value.
async function metrics() {
  const { status, body } = await h.get('/metrics');
  h.check(status === 200, `GET /metrics answered ${status}`);
  const values = new Map();
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

// How many faults of `kind` the server has injected so far.
async function faultsInjected(kind) {
  return (await metrics()).get(`plotstream_faults_injected_total{kind="${kind}"}`) || 0;
}

// Connections the server has accepted, this request's own included.
async function connectionsTotal() {
  return (await metrics()).get('plotstream_connections_total');
}

// Subscribes to the stream's feed with `?interval=MS`; resolves, once the snapshot has arrived, to
// {arrivals, close}: `arrivals` maps each appended x to the time (performance.now()) its update
// event arrived.
function watch(token, interval) {
  return new Promise((resolve, reject) => {
    const arrivals = new Map();
    const path = `/api/streams/${token}/events?interval=${interval}`;
    const req = http.get({ host: h.host, port: h.port, path, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`GET ${path} answered ${res.statusCode}`));
        res.resume();
        return;
      }
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (data) => {
        const now = performance.now();
        text += data;
        let end;
        while ((end = text.indexOf('\n\n')) >= 0) {
          const event = text.slice(0, end);
          text = text.slice(end + 2);
          const fields = {};
          for (const line of event.split('\n')) {
            const colon = line.indexOf(':');
            fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, '');
          }
          if (fields.event === 'snapshot') {
            resolve({ arrivals, close: () => req.destroy() });
          } else if (fields.event === 'update') {
            for (const update of JSON.parse(fields.data).data) {
              for (const x of (update.append && update.append.x) || []) arrivals.set(x, now);
            }
          }
        }
      });
    });
    req.on('error', (err) => {
      if (!req.destroyed) reject(err);
    });
  });
}

module.exports = { metrics, faultsInjected, connectionsTotal, watch };
