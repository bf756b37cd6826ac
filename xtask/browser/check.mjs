// The browser check behind `cargo xtask browser`: drives a `plotstream serve --demo` in headless
// Chromium.
//
//   node xtask/browser/check.mjs ORIGIN SCREENSHOT.png
//
// 1. The live view ORIGIN/streams/demo: the plot is drawn and grows while the page says `live`
//    (screenshot: SCREENSHOT.png).
// 2. A figure made through POST /clientresp the way the old clients make it (a plotly.js 1/2
//    layout: string titles, `titlefont`) whose file name is an HTML injection, streaming the
//    demo token: its page draws the points and shows the titles (SCREENSHOT-figure.png).
// 3. The index lists that file name as text: the injected `onerror` never runs.
// 4. From another origin (an about:blank page), the figure's `.embed` page can be framed and
//    its full page cannot (`frame-ancestors`).
//
// On pages 1–3 nothing may go wrong: no Content-Security-Policy violation, no console error, no
// page error, no request to another origin (everything, plotly.js included, comes from the
// server).
//
// Success prints one line of JSON and exits 0. Any failed expectation prints
// `browser check: ...` to stderr and exits 1. Each screenshot is taken before the assertions
// on its page, so it also shows what a failing page looked like. CHROMIUM_PATH overrides
// /usr/bin/chromium. Playwright never downloads a browser here.

import { launch } from "./chromium.mjs";

const [origin, screenshotPath] = process.argv.slice(2);
if (!origin || !screenshotPath) {
  console.error("usage: node check.mjs ORIGIN SCREENSHOT.png");
  process.exit(2);
}
const figureScreenshotPath = screenshotPath.replace(/(\.png)?$/, "-figure.png");

const VIEWPORT = { width: 1000, height: 600 };
const TRACE_TIMEOUT_MS = 20_000;
const GROWTH_WAIT_MS = 3_000;
// The figure's file name: markup that would set window.__xss if it ever became HTML.
const HOSTILE_NAME = "<img src=x onerror=window.__xss=1>";
const LEGACY_TITLE = "Legacy title";
const LEGACY_AXIS_TITLE = "time";

class CheckFailed extends Error {}

// Everything the pages complained about, printed when the check fails.
const pageLog = [];
// What must not happen on any page of steps 1–3; each one fails the check.
const problems = [];

let browser = null;
let context = null;
let exitCode = 0;
try {
  browser = await launch(VIEWPORT);
  context = browser.context;
  // Runs before any page script (playwright injects it past the page's CSP).
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(
        `${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile}:${e.lineNumber}`,
      );
    });
  });
  const page = context.pages()[0] ?? (await context.newPage());
  watch(page, true);

  // 1. The live view of the demo stream.
  await page.goto(`${origin}/streams/demo`, { waitUntil: "domcontentloaded", timeout: TRACE_TIMEOUT_MS });
  await waitForPoints(page, screenshotPath);
  const before = await readPlot(page);
  await page.waitForTimeout(GROWTH_WAIT_MS);
  const after = await readPlot(page);
  await page.screenshot({ path: screenshotPath, fullPage: true });
  await collectViolations(page, "/streams/demo");

  const failures = [];
  // Once the window holds maxpoints the count stops growing; the newest x must still move.
  const grew = after.n_points > before.n_points ||
    (after.n_points === before.n_points && after.n_points > 0 && after.last_x !== before.last_x);
  if (!grew) {
    failures.push(
      `the plot did not grow in ${GROWTH_WAIT_MS / 1000} s: ${before.n_points} points before, ` +
        `${after.n_points} after (newest x ${JSON.stringify(before.last_x)} -> ${JSON.stringify(after.last_x)})`,
    );
  }
  if (after.state !== "live") {
    failures.push(`#state is ${JSON.stringify(after.state)}, expected "live"`);
  }
  const rate = Number.parseFloat(after.rate);
  if (!(rate > 0)) {
    failures.push(`#rate is ${JSON.stringify(after.rate)}, expected a positive points/s`);
  }

  // 2. A figure made by an old client, with a hostile file name.
  const figurePath = await createFigure();
  await page.goto(`${origin}${figurePath}`, { waitUntil: "domcontentloaded", timeout: TRACE_TIMEOUT_MS });
  await waitForPoints(page, figureScreenshotPath);
  const figure = await page.evaluate(() => ({
    title: document.querySelector(".gtitle")?.textContent ?? null,
    xtitle: document.querySelector(".xtitle")?.textContent ?? null,
    xtitleFill: document.querySelector(".xtitle")?.style.fill ?? null,
    n_points: document.getElementById("plot").data[0].y.length,
  }));
  await page.screenshot({ path: figureScreenshotPath, fullPage: true });
  await collectViolations(page, figurePath);
  if (figure.title !== LEGACY_TITLE) {
    failures.push(`the figure's title is ${JSON.stringify(figure.title)}, expected ${JSON.stringify(LEGACY_TITLE)} (a plotly.js 2 string title)`);
  }
  if (figure.xtitle !== LEGACY_AXIS_TITLE) {
    failures.push(`the figure's x axis title is ${JSON.stringify(figure.xtitle)}, expected ${JSON.stringify(LEGACY_AXIS_TITLE)}`);
  }
  if (figure.xtitleFill !== "rgb(214, 39, 40)") {
    failures.push(`the x axis title's colour is ${JSON.stringify(figure.xtitleFill)}, expected the legacy titlefont's rgb(214, 39, 40)`);
  }

  // 3. The index shows the hostile name as text.
  await page.goto(`${origin}/`, { waitUntil: "load", timeout: TRACE_TIMEOUT_MS });
  const index = await page.evaluate((name) => ({
    xss: typeof window.__xss,
    images: document.querySelectorAll("main img").length,
    shown: document.body.innerText.includes(name),
  }), HOSTILE_NAME);
  await collectViolations(page, "/");
  if (index.xss !== "undefined" || index.images !== 0) {
    failures.push(`the index ran the file name's markup: window.__xss is ${index.xss}, ${index.images} <img> in <main>`);
  }
  if (!index.shown) {
    failures.push(`the index does not show the file name ${JSON.stringify(HOSTILE_NAME)} as text`);
  }

  // 4. Framing from another origin: `.embed` may be framed, the full page may not.
  const framing = await checkFraming(figurePath);
  if (!framing.embed) failures.push("the .embed page could not be framed from another origin");
  if (framing.full) failures.push("the full figure page could be framed from another origin");

  failures.push(...problems);
  if (failures.length) {
    throw new CheckFailed(failures.join("; "));
  }
  console.log(
    JSON.stringify({
      before: before.n_points,
      after: after.n_points,
      state: after.state,
      rate: after.rate,
      figure: { path: figurePath, points: figure.n_points, title: figure.title, xtitle: figure.xtitle },
      index_xss: index.xss,
      framing,
    }),
  );
} catch (err) {
  exitCode = 1;
  console.error(`browser check: ${err instanceof CheckFailed ? "" : "error: "}${err.message}`);
  for (const line of pageLog) console.error(`  ${line}`);
} finally {
  await browser?.close();
}
process.exit(exitCode);

// Logs what `page` reports; with `strict`, console errors, page errors and requests to other
// origins are also problems.
function watch(page, strict) {
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") {
      pageLog.push(`console ${msg.type()}: ${msg.text()}`);
    }
    if (strict && msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => {
    pageLog.push(`page error: ${err.message}`);
    if (strict) problems.push(`page error: ${err.message}`);
  });
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (strict && url.protocol !== "data:" && url.protocol !== "blob:" && url.origin !== origin) {
      problems.push(`a request to another origin: ${req.url()}`);
    }
  });
  page.on("requestfailed", (req) => {
    // The SSE request is aborted when the page closes or navigates; that is not the page's fault.
    if (!new URL(req.url()).pathname.endsWith("/events")) {
      pageLog.push(`request failed: ${req.url()} (${req.failure()?.errorText})`);
    }
  });
  page.on("response", (res) => {
    if (res.status() >= 400) pageLog.push(`HTTP ${res.status()}: ${res.url()}`);
  });
}

async function collectViolations(page, what) {
  const violations = await page.evaluate(() => window.__cspViolations);
  for (const v of violations) problems.push(`CSP violation on ${what}: ${v}`);
}

async function waitForPoints(page, failureScreenshot) {
  try {
    await page.waitForFunction(
      () => document.getElementById("plot")?.data?.[0]?.y?.length > 0,
      null,
      { timeout: TRACE_TIMEOUT_MS },
    );
  } catch (err) {
    const why = await page
      .evaluate(() => ({
        plotly: typeof window.Plotly,
        plotDiv: !!document.getElementById("plot"),
        state: document.getElementById("state")?.textContent,
      }))
      .catch(() => null);
    await screenshot(page, failureScreenshot);
    throw new CheckFailed(
      `${page.url()}: #plot has no trace with points after ${TRACE_TIMEOUT_MS / 1000} s ` +
        `(window.Plotly: ${why?.plotly}, #plot present: ${why?.plotDiv}, #state: ${JSON.stringify(why?.state)}): ${err.message.split("\n")[0]}`,
    );
  }
}

// POST /clientresp as chart_studio's py.plot does (a form the server reads raw), with a layout
// written for plotly.js 2; the figure page's path.
async function createFigure() {
  const traces = [{ x: [], y: [], type: "scatter", mode: "lines", name: "demo", stream: { token: "demo", maxpoints: 80 } }];
  const kwargs = {
    filename: HOSTILE_NAME,
    fileopt: "new",
    layout: { title: LEGACY_TITLE, xaxis: { title: LEGACY_AXIS_TITLE, titlefont: { color: "#d62728" } } },
  };
  const body = `un=browsercheck&args=${JSON.stringify(traces)}&kwargs=${JSON.stringify(kwargs)}`;
  const res = await fetch(`${origin}/clientresp`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body,
  });
  const reply = await res.json();
  if (!res.ok || reply.error || !reply.url) {
    throw new CheckFailed(`POST /clientresp answered ${res.status}: ${JSON.stringify(reply)}`);
  }
  return `${new URL(reply.url).pathname.replace(/\/?$/, "/")}`;
}

// Frames the figure's full page and its `.embed` page from about:blank (another origin); which
// of them loaded.
async function checkFraming(figurePath) {
  const page = await context.newPage();
  watch(page, false);
  try {
    const full = `${origin}${figurePath}`;
    const embed = `${origin}${figurePath.replace(/\/$/, "")}.embed`;
    await page.setContent(
      `<iframe id=full src="${full}" width=400 height=300></iframe>` +
        `<iframe id=embed src="${embed}" width=400 height=300></iframe>`,
    );
    const loaded = async (url) => {
      const deadline = Date.now() + TRACE_TIMEOUT_MS;
      while (Date.now() < deadline) {
        const frame = page.frames().find((f) => f.url() === url);
        const drawn = await frame
          ?.evaluate(() => document.getElementById("plot")?.data?.[0]?.y?.length > 0)
          .catch(() => false);
        if (drawn) return true;
        await page.waitForTimeout(100);
      }
      return false;
    };
    const embedLoaded = await loaded(embed);
    // By the time the embed has points the full page would have drawn too, had it loaded.
    const fullLoaded = await page
      .frames()
      .find((f) => f.url() === full)
      ?.evaluate(() => !!document.getElementById("plot"))
      .catch(() => false);
    return { embed: embedLoaded, full: !!fullLoaded };
  } finally {
    await page.close();
  }
}

async function readPlot(page) {
  return page.evaluate(() => {
    const trace = document.getElementById("plot").data[0];
    const xs = trace.x || [];
    return {
      n_points: trace.y.length,
      last_x: xs.length ? String(xs[xs.length - 1]) : null,
      state: document.getElementById("state").textContent.trim(),
      rate: document.getElementById("rate").textContent.trim(),
    };
  });
}

// Best effort, for a page that already failed: the screenshot shows what went wrong.
async function screenshot(page, path) {
  await page.screenshot({ path, fullPage: true }).catch((err) => {
    pageLog.push(`screenshot failed: ${err.message}`);
  });
}
