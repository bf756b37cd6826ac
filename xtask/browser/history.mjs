// The history check behind `cargo xtask browser`: a day of points explored in the viewer.
//
//   node xtask/browser/history.mjs ORIGIN SCREENSHOT.png
//
// ORIGIN is a `plotstream serve` with a data directory and no stream yet. The check writes a day
// of points to one token in one chunked POST (x: a date string every second, y: a smooth signal
// with three one-second spikes, -10 and 9 and 12), then on ORIGIN/streams/<token>:
//
// 1. "24 h" draws the whole day at a glance: the first and last points of the day, at most 4
//    points per pixel column of the plot, every spike's exact value (the downsampled min and max
//    are the true ones), the state says `history`, and the CSV link holds every point of the day
//    (SCREENSHOT-day.png).
// 2. Zooming to two minutes (Plotly.relayout, twice within the debounce: one request) draws every
//    point of those two minutes, exactly as written, one a second, and the CSV link follows
//    (SCREENSHOT.png). A slower answer to an earlier zoom never replaces a newer one.
// 3. A second writer streams points from step 2 on; the zoomed plot stays as it is. "live" draws
//    the live window again at once, with the points written while history was shown, then new
//    ones.
//
// Nothing may go wrong on the page: no Content-Security-Policy violation, no console or page
// error. Success prints one line of JSON and exits 0; any failed expectation prints
// `browser check: ...` to stderr and exits 1. Each screenshot is taken before the assertions on
// what it shows. CHROMIUM_PATH overrides /usr/bin/chromium.

import net from "node:net";

import { launch } from "./chromium.mjs";

const [origin, screenshotPath] = process.argv.slice(2);
if (!origin || !screenshotPath) {
  console.error("usage: node history.mjs ORIGIN SCREENSHOT.png");
  process.exit(2);
}
const dayScreenshotPath = screenshotPath.replace(/(\.png)?$/, "-day.png");

const TOKEN = "historyday";
const DAY_START_MS = Date.UTC(2026, 11, 5);
const DAY_POINTS = 86_400;
// Index of each one-second spike in the day, and its y.
const SPIKES = new Map([[20_000, -10], [43_260, 9], [70_000, 12]]);
// The zoom: two minutes around the 9 spike (12:01:00), both ends included.
const ZOOM_FROM = 43_200;
const ZOOM_TO = 43_320;
// Ten minutes elsewhere, asked for and overtaken; its answer is held back this long.
const STALE_FROM = 10_000;
const STALE_DELAY_MS = 1_500;
const VIEWPORT = { width: 1000, height: 600 };
const PHASE_TIMEOUT_MS = 30_000;
const LIVE_INTERVAL_MS = 100;
// How long the second writer streams while the zoomed history is shown: past a poll of the
// writer's state (every 2 s), so that "live" finds the page knowing the writer is back.
const HELD_MS = 2_500;

class CheckFailed extends Error {}

const pageLog = [];
const problems = [];

let browser = null;
let trickle = null;
let exitCode = 0;
try {
  const written = await writeDay();

  browser = await launch(VIEWPORT);
  const context = browser.context;
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"}`);
    });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page);
  const historyRequests = [];
  page.on("request", (req) => {
    if (new URL(req.url()).pathname.endsWith("/history")) historyRequests.push(req.url());
  });
  const failures = [];

  await page.goto(`${origin}/streams/${TOKEN}`, { waitUntil: "domcontentloaded", timeout: PHASE_TIMEOUT_MS });
  // The writer has gone: the page says `writer disconnected` over the live window.
  const liveBefore = await until(page, "the live window", (s) => s.points > 0 && s.last === DAY_POINTS - 1);

  // 1. The whole day.
  await page.click('#range button[data-range="86400000"]');
  const day = await until(page, "the day", (s) => s.status === "ready" && s.points > 0);
  await page.screenshot({ path: dayScreenshotPath, fullPage: true });
  const maxPoints = 4 * day.width;
  expect(failures, day.state === "history", `#state says ${JSON.stringify(day.state)} over the day, expected "history"`);
  expect(failures, day.pressed === "86400000", `the pressed range button is ${JSON.stringify(day.pressed)}`);
  expect(failures, day.first === 0, `the day view starts at second ${day.first}, expected 0`);
  expect(failures, day.last === DAY_POINTS - 1, `the day view ends at second ${day.last}, expected ${DAY_POINTS - 1}`);
  expect(failures, day.points <= maxPoints, `the day view draws ${day.points} points, more than 4 × ${day.width} px`);
  expect(failures, day.points >= DAY_POINTS / 100, `the day view draws only ${day.points} points`);
  expect(failures, day.increasing, "the day view's x does not increase");
  for (const [i, y] of SPIKES) {
    expect(failures, day.spikes[i] === y, `the spike at second ${i} (y ${y}) is drawn as ${JSON.stringify(day.spikes[i])}`);
  }
  expect(failures, day.maxY === 12 && day.minY === -10, `the day's y spans ${day.minY}..${day.maxY}, expected -10..12`);
  const csv = await readCsv(page);
  expect(failures, csv !== null, "no CSV link over the day");
  if (csv) {
    expect(failures, csv.download && /[?&]format=csv(&|$)/.test(csv.href), `the CSV link is ${JSON.stringify(csv)}`);
    expect(failures, csv.header === "n,seq,time,x,y", `the CSV starts with ${JSON.stringify(csv.header)}`);
    expect(failures, csv.rows === DAY_POINTS, `the CSV of the day has ${csv.rows} rows, expected ${DAY_POINTS}`);
  }

  // 2. Two minutes of it; the first zoom is overtaken within the debounce. A second writer
  // streams from now on.
  trickle = startTrickle();
  const requestsBefore = historyRequests.length;
  await page.evaluate(([a, b, c, d]) => {
    const el = document.getElementById("plot");
    Plotly.relayout(el, { "xaxis.range": [a, b] });
    Plotly.relayout(el, { "xaxis.range": [c, d] });
  }, [xAt(STALE_FROM), xAt(STALE_FROM + 600), xAt(ZOOM_FROM), xAt(ZOOM_TO)]);
  const zoom = await until(page, "the zoomed two minutes", (s) =>
    s.status === "ready" && s.points > 0 && s.points < 1000 && s.first >= ZOOM_FROM - 1 && s.last <= ZOOM_TO + 1);
  await page.screenshot({ path: screenshotPath, fullPage: true });
  const zoomRequests = historyRequests.slice(requestsBefore);
  expect(failures, zoomRequests.length === 1, `the two zooms made ${zoomRequests.length} history requests: ${zoomRequests.join(" ")}`);
  expect(failures, zoom.state === "history", `#state says ${JSON.stringify(zoom.state)} zoomed in`);
  const expectedSeconds = [];
  for (let i = ZOOM_FROM; i <= ZOOM_TO; i++) expectedSeconds.push(i);
  expect(failures, JSON.stringify(zoom.seconds) === JSON.stringify(expectedSeconds),
    `the zoom draws seconds ${zoom.seconds[0]}..${zoom.seconds.at(-1)} (${zoom.points} points), expected every second of ${ZOOM_FROM}..${ZOOM_TO}`);
  const wrongY = zoom.seconds.filter((i, k) => zoom.ys[k] !== signal(i));
  expect(failures, wrongY.length === 0, `the zoom draws other y than written at seconds ${wrongY.slice(0, 5).join(", ")}`);
  expect(failures, zoom.range[0] === ZOOM_FROM && zoom.range[1] === ZOOM_TO,
    `the x axis shows seconds ${zoom.range.join("..")}, expected ${ZOOM_FROM}..${ZOOM_TO}`);
  const zoomCsv = await readCsv(page);
  expect(failures, zoomCsv?.rows === ZOOM_TO - ZOOM_FROM + 1 && /[?&]by=x(&|$)/.test(zoomCsv.href),
    `the zoom's CSV link is ${JSON.stringify(zoomCsv)}, expected its ${ZOOM_TO - ZOOM_FROM + 1} rows by x`);

  // A slow answer overtaken by a newer request is never drawn: the answer to a zoom elsewhere is
  // held back while the plot zooms back to the two minutes.
  const staleFrom = xAt(STALE_FROM).slice(0, 19);
  let staleHeld = false;
  await page.route((url) => url.pathname.endsWith("/history") && (url.searchParams.get("from") ?? "").startsWith(staleFrom), async (route) => {
    staleHeld = true;
    await new Promise((r) => setTimeout(r, STALE_DELAY_MS));
    await route.continue().catch(() => {}); // the page may have aborted it meanwhile
  });
  await relayout(page, STALE_FROM, STALE_FROM + 600);
  await page.waitForTimeout(400);
  await relayout(page, ZOOM_FROM, ZOOM_TO);
  await page.waitForTimeout(STALE_DELAY_MS + 500);
  const after = await shown(page);
  expect(failures, staleHeld, "the zoom elsewhere made no request to hold back");
  expect(failures, after.first === ZOOM_FROM && after.last === ZOOM_TO && after.points === zoom.points,
    `after a stale answer the plot shows ${JSON.stringify(summary(after))}, expected the two minutes again`);
  await page.unrouteAll({ behavior: "ignoreErrors" });

  // 3. Live again, with what came meanwhile.
  await page.waitForTimeout(HELD_MS);
  const held = await shown(page);
  expect(failures, held.points === zoom.points && held.first === zoom.first && held.state === "history",
    `the zoomed plot changed while a writer streamed: ${JSON.stringify(summary(held))}`);
  const sentWhileHeld = trickle.sent();
  await page.click('#range button[data-range="live"]');
  const back = await shown(page);
  expect(failures, back.state === "live", `#state says ${JSON.stringify(back.state)} after "live"`);
  expect(failures, back.points === liveBefore.points, `the live window has ${back.points} points, ${liveBefore.points} before`);
  // The points that arrived while history was shown are drawn at once (a few may still be on
  // their way: the feed coalesces every 50 ms).
  expect(failures, back.last >= DAY_POINTS - 1 + sentWhileHeld - 5,
    `"live" drew up to second ${back.last}; ${sentWhileHeld} points after ${DAY_POINTS - 1} had been written`);
  const gap = back.seconds.findIndex((v, k) => k > 0 && v !== back.seconds[k - 1] + 1);
  expect(failures, gap < 0, `the live window skips from second ${back.seconds[gap - 1]} to ${back.seconds[gap]}`);
  const grown = await until(page, "new live points", (s) => s.state === "live" && s.last > back.last);
  const csvHidden = await page.evaluate(() => document.getElementById("csv").hidden);
  expect(failures, csvHidden, "the CSV link stays in the live view");
  const ended = await trickle.stop();
  trickle = null;
  expect(failures, ended.startsWith("HTTP/1.1 200"), `the second writer got ${JSON.stringify(ended.split("\r\n")[0])}`);

  for (const v of await page.evaluate(() => window.__cspViolations)) problems.push(`CSP violation: ${v}`);
  failures.push(...problems);
  if (failures.length) throw new CheckFailed(failures.join("; "));
  console.log(JSON.stringify({
    written,
    day: summary(day),
    zoom: summary(zoom),
    requests: zoomRequests.length,
    csv_rows: csv?.rows,
    live: { before: summary(liveBefore), back: summary(back), grown: summary(grown), sent_while_held: sentWhileHeld },
  }));
} catch (err) {
  exitCode = 1;
  console.error(`browser check: ${err instanceof CheckFailed ? "" : "error: "}${err.message.split("\n")[0]}`);
  for (const line of pageLog) console.error(`  ${line}`);
} finally {
  await trickle?.stop().catch(() => {});
  await browser?.close();
}
process.exit(exitCode);

// The day's signal: two slow waves, and the spikes.
function signal(i) {
  return SPIKES.get(i) ?? Math.round(1000 * (Math.sin((2 * Math.PI * i) / 3600) + 0.3 * Math.sin((2 * Math.PI * i) / 617))) / 1000;
}

// Second `i` of the day as chart_studio's tutorial writes it: "YYYY-MM-DD HH:MM:SS.ffffff".
function xAt(i) {
  return new Date(DAY_START_MS + i * 1000).toISOString().replace("T", " ").replace("Z", "000");
}

// A date string of the page ("YYYY-MM-DD HH:MM:SS[.f…]") as seconds since the day's start.
function secondOf(x) {
  const m = /^(\d{4})-(\d\d)-(\d\d)(?: (\d\d)(?::(\d\d)(?::(\d\d)(\.\d+)?)?)?)?$/.exec(String(x));
  if (!m) return NaN;
  const [hh, mm, ss] = [m[4], m[5], m[6]].map((v) => Number(v ?? 0));
  const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], hh, mm, ss) + (m[7] ? Number(m[7]) * 1000 : 0);
  return (ms - DAY_START_MS) / 1000;
}

// Writes the day in one chunked POST, 1 000 lines a chunk; the number of points written.
async function writeDay() {
  const writer = await openWriter();
  for (let start = 0; start < DAY_POINTS; start += 1000) {
    let body = "";
    for (let i = start; i < Math.min(start + 1000, DAY_POINTS); i++) body += `{"x":"${xAt(i)}","y":${signal(i)}}\n`;
    writer.chunk(body);
  }
  const response = await writer.end();
  if (!response.startsWith("HTTP/1.1 200")) throw new CheckFailed(`writing the day got ${JSON.stringify(response.split("\r\n")[0])}`);
  return DAY_POINTS;
}

// A second writer, one point every LIVE_INTERVAL_MS after the day, until `stop()`.
function startTrickle() {
  let sent = 0;
  let stopped = null;
  const opened = openWriter();
  opened.catch(() => {});
  const timer = setInterval(() => {
    opened.then((writer) => {
      writer.chunk(`{"x":"${xAt(DAY_POINTS + sent)}","y":0.5}\n`);
      sent++;
    }, () => {});
  }, LIVE_INTERVAL_MS);
  return {
    sent: () => sent,
    stop: () => {
      clearInterval(timer);
      stopped ??= opened.then((writer) => writer.end());
      return stopped;
    },
  };
}

// One `POST /` to ORIGIN, chunked, as the protocol's writers send it: `{ chunk(text), end() }`,
// `end` ending the body and resolving to the server's response once it closes.
function openWriter() {
  const url = new URL(origin);
  return new Promise((resolve, reject) => {
    let response = "";
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(`POST / HTTP/1.1\r\nHost: ${url.host}\r\nplotly-streamtoken: ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      resolve({
        chunk: (text) => socket.write(`${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`),
        end: () => {
          socket.write("0\r\n\r\n");
          return withTimeout(closed, PHASE_TIMEOUT_MS, "response to a writer");
        },
      });
    });
    const closed = new Promise((done) => socket.on("close", () => done(response)));
    socket.on("data", (d) => { response += d; });
    socket.once("error", reject);
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new CheckFailed(`no ${what} within ${ms / 1000} s`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// What the page shows: x as seconds of the day (first, last, every one), y, the state.
async function shown(page) {
  const s = await page.evaluate(() => {
    const el = document.getElementById("plot");
    const trace = el.data?.[0] ?? {};
    return {
      state: document.getElementById("state")?.textContent.trim(),
      status: el.dataset.historyStatus ?? null,
      pressed: document.querySelector('#range button[aria-pressed="true"]')?.dataset.range ?? null,
      width: el.clientWidth,
      xs: (trace.x || []).map(String),
      ys: trace.y || [],
      range: (el._fullLayout?.xaxis?.range || []).map(String),
    };
  });
  const seconds = s.xs.map(secondOf);
  const spikes = {};
  for (const i of SPIKES.keys()) {
    const k = seconds.indexOf(i);
    spikes[i] = k < 0 ? null : s.ys[k];
  }
  const ys = s.ys.filter((y) => typeof y === "number");
  return {
    state: s.state,
    status: s.status,
    pressed: s.pressed,
    width: s.width,
    points: s.xs.length,
    first: seconds.length ? seconds[0] : null,
    last: seconds.length ? seconds.at(-1) : null,
    seconds,
    ys: s.ys,
    increasing: seconds.every((v, k) => k === 0 || v > seconds[k - 1]),
    spikes,
    minY: Math.min(...ys),
    maxY: Math.max(...ys),
    range: s.range.map((x) => Math.round(secondOf(x))),
  };
}

// The CSV link and what it downloads, or null when it is hidden.
function readCsv(page) {
  return page.evaluate(async () => {
    const a = document.getElementById("csv");
    if (!a || a.hidden) return null;
    const text = await (await fetch(a.href)).text();
    const rows = text.trimEnd().split("\n");
    return { href: a.getAttribute("href"), download: a.hasAttribute("download"), header: rows[0], rows: rows.length - 1 };
  });
}

// Zooms the plot to seconds `from`..`to` of the day, as a drag would.
function relayout(page, from, to) {
  return page.evaluate(([a, b]) => Plotly.relayout(document.getElementById("plot"), { "xaxis.range": [a, b] }), [xAt(from), xAt(to)]);
}

function summary(s) {
  return { state: s.state, points: s.points, first: s.first, last: s.last, min_y: s.minY, max_y: s.maxY };
}

// Polls the page until `ok`; on timeout a screenshot and a failure naming `what`.
async function until(page, what, ok) {
  const deadline = Date.now() + PHASE_TIMEOUT_MS;
  for (;;) {
    const now = await shown(page);
    if (ok(now)) return now;
    if (Date.now() > deadline) {
      await page.screenshot({ path: screenshotPath, fullPage: true }).catch(() => {});
      throw new CheckFailed(`the page never showed ${what}: ${JSON.stringify(summary(now))} (status ${now.status})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function expect(failures, ok, message) {
  if (!ok) failures.push(message);
}

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") pageLog.push(`console ${msg.type()}: ${msg.text()}`);
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => {
    pageLog.push(`page error: ${err.message}`);
    problems.push(`page error: ${err.message}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) pageLog.push(`HTTP ${res.status()}: ${res.url()}`);
  });
}
