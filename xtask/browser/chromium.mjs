// The system's headless Chromium as both browser checks start it (check.mjs, reconnecting.mjs):
// CHROMIUM_PATH overrides /usr/bin/chromium; Playwright never downloads a browser here. Without
// the background-networking flags, Chromium's own connections are refused by this machine's
// closed network.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

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

// Chromium in a fresh profile (launchPersistentContext is how playwright takes
// --user-data-dir): `{ context, close }`, where `close` ends Chromium and removes the profile;
// nothing may outlive a check.
export async function launch(viewport) {
  const userDataDir = mkdtempSync(join(tmpdir(), "plotstream-chromium-"));
  const close = async (context) => {
    await context?.close().catch((err) => console.error(`browser check: closing Chromium: ${err.message}`));
    rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport,
    });
    return { context, close: () => close(context) };
  } catch (err) {
    await close(null);
    throw err;
  }
}
