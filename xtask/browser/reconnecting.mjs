// The second browser check behind `cargo xtask browser`: a viewer of a node on Redis while
// Redis goes away and comes back (docs/storage.md "Several nodes").
//
//   node xtask/browser/reconnecting.mjs ORIGIN SCREENSHOT.png
//
// ORIGIN is a `plotstream serve --demo --redis URL`. The check talks with the harness on its
// standard streams: it prints `live` once ORIGIN/streams/demo is drawn and says `live` (the
// harness then kills Redis), `reconnecting` once the page says `reconnecting` while it still
// shows the points it had (screenshot: SCREENSHOT.png; the harness then starts Redis again),
// and `live again` once the page says `live` and its plot grows again. Any failed
// expectation prints `browser check: ...` to stderr and exits 1. CHROMIUM_PATH overrides
// /usr/bin/chromium.

import { launch } from "./chromium.mjs";

const [origin, screenshotPath] = process.argv.slice(2);
if (!origin || !screenshotPath) {
  console.error("usage: node reconnecting.mjs ORIGIN SCREENSHOT.png");
  process.exit(2);
}

// Each phase waits at most this long: the node learns of Redis within a lease refresh and
// a timeout, and a restarted Redis is taken up at the next refresh.
const PHASE_TIMEOUT_MS = 30_000;

let browser = null;
let context = null;
let exitCode = 0;
try {
  browser = await launch({ width: 1000, height: 600 });
  context = browser.context;
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${origin}/streams/demo`, { waitUntil: "domcontentloaded", timeout: PHASE_TIMEOUT_MS });
  // What the page shows: its state, how many points, the newest x.
  const shown = () =>
    page.evaluate(() => {
      const trace = document.getElementById("plot")?.data?.[0];
      const xs = trace?.x || [];
      return {
        state: document.getElementById("state")?.textContent.trim(),
        points: (trace?.y || []).length,
        last: xs.length ? String(xs[xs.length - 1]) : null,
      };
    });
  const until = async (what, ok) => {
    const deadline = Date.now() + PHASE_TIMEOUT_MS;
    for (;;) {
      const now = await shown();
      if (ok(now)) return now;
      if (Date.now() > deadline) {
        await page.screenshot({ path: screenshotPath, fullPage: true }).catch(() => {});
        throw new Error(`the page never showed ${what}: ${JSON.stringify(now)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  await until("live with points", (s) => s.state === "live" && s.points > 0);
  console.log("live");

  const down = await until("reconnecting", (s) => s.state === "reconnecting");
  await page.screenshot({ path: screenshotPath, fullPage: true });
  if (down.points === 0) {
    throw new Error("the page dropped its points while reconnecting");
  }
  console.log("reconnecting");

  await until("live with new points", (s) => s.state === "live" && s.last !== down.last);
  console.log("live again");
} catch (err) {
  console.error(`browser check: ${err.message.split("\n")[0]}`);
  exitCode = 1;
} finally {
  await browser?.close();
}
process.exit(exitCode);
