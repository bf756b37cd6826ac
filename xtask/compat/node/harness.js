'use strict';
// What the node compat cases share. `cargo xtask compat` (xtask/src/compat/run.rs) runs each script with
// NODE_PATH at its own `npm install` of package.json (plotly 1.0.6) and:
//   COMPAT_SERVER     the server's plaintext origin, e.g. http://127.0.0.1:41234
//   COMPAT_TLS_PORT   its TLS listener, for plot() (only the cases that need it)
//   COMPAT_SLOW_PORT  a second server's port, for the cases that need one
//   NODE_EXTRA_CA_CERTS  the self-signed certificate of the TLS listener
//   COMPAT_USERNAME, COMPAT_API_KEY, COMPAT_STREAM_IDS  in keys mode (`serve --users FILE`), the
//                     account `plotstream user add` printed (stream ids comma-separated)
// A case passes when its script exits with 0; its last line `ok: ...` is shown after its name.

const http = require('http');

const server = new URL(process.env.COMPAT_SERVER);
const host = server.hostname;
const port = Number(server.port);

function fail(message) {
  console.log('FAILED: ' + message);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(typeof message === 'function' ? message() : message);
}

function ok(summary) {
  console.log('ok: ' + summary);
  process.exit(0);
}

// GET `path` of the server on `port`: resolves to {status, body}.
function get(path, onPort) {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port: onPort || port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', reject);
  });
}

// `GET /api/streams/{token}` as an object, or null when the server has no such stream.
async function inspect(token, onPort) {
  const { status, body } = await get('/api/streams/' + token, onPort);
  if (status === 404) return null;
  check(status === 200, `GET /api/streams/${token} answered ${status}: ${body}`);
  return JSON.parse(body);
}

// The keys-mode account, or the open-mode defaults.
const account = {
  username: process.env.COMPAT_USERNAME || 'demo',
  apiKey: process.env.COMPAT_API_KEY || 'demokey123',
  streamIds: (process.env.COMPAT_STREAM_IDS || '').split(',').filter(Boolean),
};

// `GET /api/streams`: every stream by its read id (keys mode lists no write token).
async function streams(onPort) {
  const { status, body } = await get('/api/streams', onPort);
  check(status === 200, `GET /api/streams answered ${status}: ${body}`);
  return JSON.parse(body);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Runs `main()`; any exception fails the case.
function run(main) {
  main().then(ok, (err) => fail(err && err.stack ? err.stack : String(err)));
}

module.exports = { host, port, account, check, fail, get, inspect, streams, sleep, run };
