// The browser check behind `cargo xtask browser`: opens a plotstream live view in headless
// Chromium and checks that the plot is drawn and grows while the page says it is live.
//
//   node xtask/browser/check.mjs URL SCREENSHOT.png
//
// Success prints one line of JSON, {"before":N,"after":M,"state":"live","rate":"10.0 points/s"},
// and exits 0. Any failed expectation prints `browser check: ...` to stderr and exits 1. The
// screenshot is taken before the assertions, so it also shows what a failing page looked like.
// CHROMIUM_PATH overrides /usr/bin/chromium. Playwright never downloads a browser here.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

const [url, screenshotPath] = process.argv.slice(2);
if (!url || !screenshotPath) {
  console.error("usage: node check.mjs URL SCREENSHOT.png");
  process.exit(2);
}

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--no-first-run",
  "--disable-component-update",
  "--disable-sync",
];
const VIEWPORT = { width: 1000, height: 600 };
const TRACE_TIMEOUT_MS = 20_000;
const GROWTH_WAIT_MS = 3_000;

class CheckFailed extends Error {}

// Everything the page complained about, printed when the check fails.
const pageLog = [];

// A fresh profile per run; launchPersistentContext is how playwright takes --user-data-dir.
const userDataDir = mkdtempSync(join(tmpdir(), "plotstream-chromium-"));
let context = null;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: VIEWPORT,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") {
      pageLog.push(`console ${msg.type()}: ${msg.text()}`);
    }
  });
  page.on("pageerror", (err) => pageLog.push(`page error: ${err.message}`));
  page.on("requestfailed", (req) => {
    // The SSE request is aborted when the page closes; that is not the page's fault.
    if (!req.url().endsWith("/events")) {
      pageLog.push(`request failed: ${req.url()} (${req.failure()?.errorText})`);
    }
  });
  page.on("response", (res) => {
    if (res.status() >= 400) pageLog.push(`HTTP ${res.status()}: ${res.url()}`);
  });

  await page.goto(url, { waitUntil: "domcontentloaded", timeout: TRACE_TIMEOUT_MS });
  try {
    await page.waitForFunction(
      () => {
        const plot = document.getElementById("plot");
        return plot?.data?.[0]?.y?.length > 0;
      },
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
    await screenshot(page);
    throw new CheckFailed(
      `#plot has no trace with points after ${TRACE_TIMEOUT_MS / 1000} s ` +
        `(window.Plotly: ${why?.plotly}, #plot present: ${why?.plotDiv}, #state: ${JSON.stringify(why?.state)}): ${err.message.split("\n")[0]}`,
    );
  }

  const before = await readPlot(page);
  await page.waitForTimeout(GROWTH_WAIT_MS);
  const after = await readPlot(page);
  await page.screenshot({ path: screenshotPath, fullPage: true });

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
  if (failures.length) {
    throw new CheckFailed(failures.join("; "));
  }
  console.log(
    JSON.stringify({ before: before.n_points, after: after.n_points, state: after.state, rate: after.rate }),
  );
} catch (err) {
  exitCode = 1;
  console.error(`browser check: ${err instanceof CheckFailed ? "" : "error: "}${err.message}`);
  for (const line of pageLog) console.error(`  ${line}`);
} finally {
  // Closing the persistent context closes Chromium; nothing may outlive the check.
  await context?.close().catch((err) => console.error(`browser check: closing Chromium: ${err.message}`));
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);

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
async function screenshot(page) {
  await page.screenshot({ path: screenshotPath, fullPage: true }).catch((err) => {
    pageLog.push(`screenshot failed: ${err.message}`);
  });
}
