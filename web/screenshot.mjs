// docs/live-view.png: `flowgraph ui --input data/demo.fgb` in headless Chromium, with an edge
// hovered. Usage: node web/screenshot.mjs OUT.png   (scripts/web screenshot runs it)

import { join } from "node:path";
import { ROOT, describe, launchBrowser, startServer, waitForView } from "./tests/helpers.mjs";

const out = process.argv[2] || join(ROOT, "docs/live-view.png");

const server = await startServer(["--input", join(ROOT, "data/demo.fgb")]);
let browser;
try {
  browser = await launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  await page.goto(server.url);
  await waitForView(page, (v) => v.status === "live" && v.edges.length > 0, "the demo's graph", 60000);
  // The recording plays at full speed: wait until the drawing stops changing.
  let last = "";
  for (let i = 0; i < 60; i++) {
    const v = await describe(page);
    const now = `${v.time}|${v.edges.length}`;
    if (now === last) break;
    last = now;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await page.locator("#relayout").click();
  // Hover the edge with the most bytes, so that the picture shows a tooltip.
  const v = await describe(page);
  const e = v.edges.reduce((a, b) => (b.bytes_total > a.bytes_total ? b : a));
  await page.mouse.move(e.pageX, e.pageY, { steps: 4 });
  await page.locator("#tooltip").waitFor({ state: "visible", timeout: 10000 });
  await page.screenshot({ path: out, fullPage: false });
  console.log(`web: wrote ${out} (${v.nodes.length} nodes, ${v.edges.length} edges)`);
} finally {
  await browser?.close();
  await server.stop();
}
