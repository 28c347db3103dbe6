// The live view in a real browser: Debian's headless Chromium (playwright-core) against the real
// `flowgraph ui`, fed JSON Lines on stdin step by step. Needs target/release/flowgraph (built
// after web/dist) and /usr/bin/chromium (scripts/setup); fails, never skips, without them.
// Run with scripts/web test.

import test, { after, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  WEB,
  api,
  describe,
  edgeLines,
  golden,
  goldenStateBefore,
  launchBrowser,
  nodeNames,
  startServer,
  waitForView,
} from "./helpers.mjs";

const BASE = ["--input", "-", "--lateness", "0s", "--progress-interval", "1s"];
const GOLDEN = golden("basic_pod");
// The golden case's query (window 30s, group_by pod) with this test's lateness.
const GOLDEN_ARGS = [...BASE, "--window", "30s", "--group-by", "pod"];

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** A server and a page for one test; both are closed by the returned cleanup, always. */
async function open(args) {
  const server = await startServer(args);
  let context;
  try {
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    // Console errors too: a Content-Security-Policy violation (something loaded from outside) is one.
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    await page.goto(server.url);
    return {
      server,
      page,
      errors,
      async close() {
        await context.close().catch(() => {});
        await server.stop();
      },
    };
  } catch (e) {
    await context?.close().catch(() => {});
    await server.stop();
    throw e;
  }
}

/** The input lines up to and including the progress record with time_ == t. */
function inputThrough(t) {
  const i = GOLDEN.input.findIndex((r) => r.type === "progress" && String(r.time_) === String(t));
  assert.ok(i >= 0, `no progress record at ${t} in the golden input`);
  return { head: GOLDEN.input.slice(0, i + 1), rest: GOLDEN.input.slice(i + 1) };
}

/** What the page's time reads for a complete time (exact decimal string). */
const timeText = (t) => String(BigInt(t));

const pageEdges = (view) => edgeLines(view.edges);

async function tooltipText(page) {
  const tip = page.locator("#tooltip");
  await tip.waitFor({ state: "visible", timeout: 10000 });
  return tip.innerText();
}

/** Points the mouse at an edge's middle and returns the tooltip's text. */
async function hoverEdge(page, from, to) {
  const view = await describe(page);
  const e = view.edges.find((x) => x.from === from && x.to === to);
  assert.ok(e, `no edge ${from} -> ${to} drawn`);
  await page.mouse.move(5, 5);
  await page.mouse.move(e.pageX, e.pageY, { steps: 4 });
  return tooltipText(page);
}

test("the server serves the current build of the page", async () => {
  const { server, close } = await open(BASE);
  try {
    for (const [path, file] of [
      ["", "index.html"],
      ["assets/app.js", "app.js"],
      ["assets/app.css", "app.css"],
    ]) {
      const res = await fetch(new URL(path, server.url));
      assert.equal(res.status, 200, path);
      const served = Buffer.from(await res.arrayBuffer());
      const built = readFileSync(join(WEB, "dist", file));
      assert.ok(
        served.equals(built),
        `the server's /${path} is not web/dist/${file}: the binary embeds an older build; rebuild it (cargo build --release --bin flowgraph)`,
      );
    }
  } finally {
    await close();
  }
});

test("golden stream: the page loads, shows the graph, updates live, hovers and filters", async () => {
  const s = await open(GOLDEN_ARGS);
  const { server, page, errors } = s;
  try {
    // Loads, connects, and says it waits for the first complete time.
    await waitForView(page, (v) => v.status === "live", "the stream to connect");
    await assert.doesNotReject(page.locator("#empty").waitFor({ state: "visible", timeout: 5000 }));
    assert.deepEqual(await page.locator("#p-group_by").inputValue(), "pod");
    assert.deepEqual(await page.locator("#p-window").inputValue(), "30s");

    // Step 1: the first three progress marks' worth of records.
    const f1 = 1700000022000000000n;
    const { head } = inputThrough(f1);
    await server.write(head);
    const want1 = goldenStateBefore(GOLDEN.deltas, f1);
    let view = await waitForView(page, (v) => v.time === timeText(f1 - 1n), `time ${f1 - 1n}`);
    assert.deepEqual(pageEdges(view), edgeLines(want1.edges));
    assert.deepEqual(view.nodes.map((n) => n.id).sort(), nodeNames(want1.edges));
    assert.equal(view.rows, want1.rows.length);
    await page.evaluate(() => {
      window.__notReloaded = true;
    });
    const positions1 = new Map(view.nodes.map((n) => [n.id, `${n.x},${n.y}`]));

    // Step 2: a new delta, from more records and a progress record that moves time (the name
    // record at 35 s renames 2001:db8::10 to api.stripe.com): graph and table follow, no reload.
    const f2 = 1700000042000000000n;
    const step2 = inputThrough(f2);
    await server.write(step2.head.slice(head.length));
    const want2 = goldenStateBefore(GOLDEN.deltas, f2);
    view = await waitForView(page, (v) => v.time === timeText(f2 - 1n), `time ${f2 - 1n}`);
    assert.deepEqual(pageEdges(view), edgeLines(want2.edges));
    assert.ok(view.nodes.some((n) => n.id === "api.stripe.com"));
    assert.ok(!view.nodes.some((n) => n.id === "2001:db8::10"));
    const big2 = want2.rows.reduce((a, b) => (b.bytes_total > a.bytes_total ? b : a));
    assert.match(await page.locator("#rows tbody tr").first().innerText(), new RegExp(`^${big2.from_entity}\\s+${big2.to_entity}`));
    assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page reloaded");

    // Step 3: the rest, then the end of input: the expected snapshot.
    const want = GOLDEN.snapshot;
    await server.write(step2.rest);
    server.end();
    view = await waitForView(page, (v) => v.time === timeText(want.time), `the final time ${want.time}`);
    assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page reloaded");
    assert.deepEqual(pageEdges(view), edgeLines(want.edges));
    assert.deepEqual(view.nodes.map((n) => n.id).sort(), nodeNames(want.edges));
    assert.equal(view.edges.length, want.edges.length);
    const kinds = Object.fromEntries(view.nodes.map((n) => [n.id, n.kind]));
    assert.equal(kinds["shop/frontend-0"], "entity");
    assert.equal(kinds["api.stripe.com"], "remote");
    // Nodes that stayed did not move.
    for (const n of view.nodes) {
      if (positions1.has(n.id)) assert.equal(`${n.x},${n.y}`, positions1.get(n.id), `${n.id} moved`);
    }
    // Edge thickness follows bytes_total.
    const width = Object.fromEntries(view.edges.map((e) => [`${e.from}>${e.to}`, e.width]));
    assert.ok(width["shop/frontend-0>shop/cart-0"] > width["db/redis-0>10.0.9.9"]);
    // The table: every row, biggest first, human-readable.
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "5 of 5 rows" }).waitFor({ timeout: 5000 }));
    const first = await page.locator("#rows tbody tr").first().innerText();
    assert.match(first, /shop\/frontend-0\s+shop\/cart-0\s+nginx -g daemon off;\s+1:100:1000\s+10\.0\.1\.2\s+6\.8 KiB\s+136\.7 KiB\s+143\.6 KiB/);
    assert.match(await page.locator("#status").innerText(), /graph at 2023-11-14 22:14:22 UTC/);

    // Hover an edge: total, sent and received, human-readable.
    const tip = await hoverEdge(page, "shop/frontend-0", "shop/cart-0");
    assert.match(tip, /shop\/frontend-0 → shop\/cart-0/);
    assert.match(tip, /total 143\.6 KiB \(147,000 B\)/);
    assert.match(tip, /sent 6\.8 KiB · received 136\.7 KiB/);
    await page.mouse.move(2, 2);
    await page.locator("#tooltip").waitFor({ state: "hidden", timeout: 5000 });

    // Sort the table by a header, filter it by text, then by clicking a node.
    await page.locator('#rows th[data-key="from_entity"] button').click();
    assert.match(await page.locator("#rows tbody tr").first().innerText(), /^db\/redis-0/);
    await page.locator("#filter").fill("redis-server");
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "2 of 5 rows" }).waitFor({ timeout: 5000 }));
    await page.locator("#filter").fill("");
    const cart = (await describe(page)).nodes.find((n) => n.id === "shop/cart-0");
    const at = await page.evaluate(() => {
      const n = window.__flowgraph.cy.getElementById("shop/cart-0");
      const r = document.getElementById("graph").getBoundingClientRect();
      const p = n.renderedPosition();
      return { x: r.left + p.x, y: r.top + p.y };
    });
    assert.ok(cart);
    await page.mouse.click(at.x, at.y);
    await assert.doesNotReject(page.locator("#selection", { hasText: "node shop/cart-0" }).waitFor({ timeout: 5000 }));
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "4 of 5 rows" }).waitFor({ timeout: 5000 }));
    for (const r of await page.locator("#rows tbody tr").allInnerTexts()) assert.match(r, /shop\/cart-0/);
    await page.locator("#selection-clear").click();
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "5 of 5 rows" }).waitFor({ timeout: 5000 }));

    assert.deepEqual(errors, [], "errors in the page");
  } catch (e) {
    e.message += `\nserver stderr (tail):\n${server.stderr().slice(-3000)}`;
    throw e;
  } finally {
    await s.close();
  }
});

test("changing group_by in the page regroups the graph", async () => {
  const s = await open(GOLDEN_ARGS);
  const { server, page, errors } = s;
  try {
    await server.write(GOLDEN.input);
    server.end();
    await waitForView(page, (v) => v.time === timeText(GOLDEN.snapshot.time), "the golden stream's end");
    await page.locator("#p-group_by").selectOption("service");
    // After the input's end a change applies at once; the page follows the stream.
    const view = await waitForView(
      page,
      (v) => v.params?.group_by === "service" && v.edges.length > 0 && !v.nodes.some((n) => n.id === "shop/frontend-0"),
      "the graph grouped by service",
    );
    // The stream can regroup the graph before the PUT's own answer reaches the page: wait
    // for the answer's note rather than read it at once.
    await page.waitForFunction(
      () => /^applied/.test(document.querySelector("#params-note")?.textContent ?? ""),
      null,
      { timeout: 10000 },
    );
    assert.match(await page.locator("#params-note").innerText(), /^applied/);
    const ids = view.nodes.map((n) => n.id);
    assert.ok(ids.includes("shop/frontend"), `no service node shop/frontend in ${ids}`);
    // The page draws exactly what the server holds.
    const graph = await api(server, "graph");
    assert.equal(graph.status, 200);
    assert.equal(graph.json.params.group_by, "service");
    const settled = await waitForView(
      page,
      (v) => JSON.stringify(pageEdges(v)) === JSON.stringify(edgeLines(graph.json.edges)),
      "the page to match api/graph",
      10000,
    );
    assert.deepEqual(settled.nodes.map((n) => n.id).sort(), nodeNames(graph.json.edges));
    assert.equal(settled.rows, graph.json.rows.length);
    assert.deepEqual(errors, []);
  } catch (e) {
    e.message += `\nserver stderr (tail):\n${server.stderr().slice(-3000)}`;
    throw e;
  } finally {
    await s.close();
  }
});

test("a bad parameter shows the server's error in the page", async () => {
  const s = await open(GOLDEN_ARGS);
  const { server, page } = s;
  try {
    await waitForView(page, (v) => v.status === "live", "the stream to connect");
    for (const [field, value] of [
      ["ips", "10.0.0.0/33"],
      ["window", "banana"],
    ]) {
      // What the server says to this value (a rejected change changes nothing).
      const direct = await api(server, "params", { method: "PUT", body: { [field]: value } });
      assert.equal(direct.status, 400, `the server accepted ${field}=${value}`);
      assert.equal(direct.json.field, field);
      const input = page.locator(`#p-${field}`);
      await input.fill(value);
      await input.press("Enter");
      const alert = page.locator("#params-error");
      await alert.waitFor({ state: "visible", timeout: 10000 });
      assert.equal((await alert.innerText()).trim(), direct.json.error);
      assert.equal(await input.getAttribute("aria-invalid"), "true");
      // Escape puts back the server's value and clears the error.
      await input.press("Escape");
      await alert.waitFor({ state: "hidden", timeout: 5000 });
    }
    assert.deepEqual((await api(server, "params")).json.window, "30s");
  } finally {
    await s.close();
  }
});

test("with --token the page uses #token=..., and without it shows an auth error", async () => {
  const token = "t0k3n-for-the-view-test";
  const server = await startServer([...GOLDEN_ARGS, "--token", token]);
  const contexts = [];
  try {
    // Without the token: the server's 401 error, and a place to enter the token.
    const bare = await api(server, "graph");
    assert.equal(bare.status, 401);
    const c1 = await browser.newContext();
    contexts.push(c1);
    const p1 = await c1.newPage();
    await p1.goto(server.url);
    const banner = p1.locator("#banner");
    await banner.waitFor({ state: "visible", timeout: 10000 });
    const text = await banner.innerText();
    assert.ok(text.includes(bare.json.error), `the banner "${text}" lacks the server's error "${bare.json.error}"`);
    assert.match(text, /not authorized/);
    await assert.doesNotReject(p1.locator("#token-input").waitFor({ state: "visible", timeout: 5000 }));

    // With the token in the fragment: data loads; the token leaves the address bar.
    const c2 = await browser.newContext();
    contexts.push(c2);
    const p2 = await c2.newPage();
    await p2.goto(`${server.url}#token=${token}`);
    await server.write(GOLDEN.input);
    server.end();
    const view = await waitForView(p2, (v) => v.time === timeText(GOLDEN.snapshot.time), "data with the token");
    assert.deepEqual(pageEdges(view), edgeLines(GOLDEN.snapshot.edges));
    assert.equal(new URL(p2.url()).hash, "");
    assert.equal(await p2.evaluate(() => sessionStorage.getItem("flowgraph.token")), token);
    assert.equal(await p2.locator("#banner").isVisible(), false);

    // Entering the token in the first page's form loads the data there too.
    await p1.locator("#token-input").fill(token);
    await p1.locator("#token-form button").click();
    await waitForView(p1, (v) => v.edges.length === GOLDEN.snapshot.edges.length, "data after entering the token");
    await banner.waitFor({ state: "hidden", timeout: 5000 });
  } catch (e) {
    e.message += `\nserver stderr (tail):\n${server.stderr().slice(-3000)}`;
    throw e;
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    await server.stop();
  }
});

/** 1,000 connections: 50 pods, each to 20 of 200 external addresses, in one event time. */
function bigInput() {
  const t0 = 1700000000000000000n;
  const records = [];
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  for (let p = 0; p < 50; p++) {
    records.push({
      type: "process",
      time_: Number(t0),
      upid: `1:${1000 + p}:${5000 + p}`,
      cmdline: `/app/worker --shard ${p}`,
      comm: "worker",
      pod: `load/worker-${p}`,
      service: `load/worker-${p % 5}`,
      namespace: "load",
      node: `node-${p % 3}`,
      container: `c${p}`,
      host: `host-${p % 3}`,
    });
  }
  const edges = new Set();
  for (let p = 0; p < 50; p++) {
    const taken = new Set();
    while (taken.size < 20) taken.add(Math.floor(rand() * 200));
    for (const a of taken) {
      const sent = 1 + Math.floor(rand() * 5e6);
      const recv = 1 + Math.floor(rand() * 5e7);
      edges.add(`${p}>${a}`);
      records.push({
        type: "conn_stats",
        time_: Number(t0),
        upid: `1:${1000 + p}:${5000 + p}`,
        remote_addr: `198.51.${Math.floor(a / 100)}.${a % 100}`,
        remote_port: 443,
        trace_role: 1,
        conn_open: 1,
        conn_close: 0,
        conn_active: 1,
        bytes_sent: sent,
        bytes_recv: recv,
      });
    }
  }
  records.push({ type: "progress", time_: Number(t0 + 1000000000n), source: "test" });
  return { records, edges: edges.size };
}

test("1,000 edges: the page renders them and stays usable", async () => {
  const big = bigInput();
  assert.equal(big.edges, 1000);
  const s = await open([...BASE, "--window", "5m", "--group-by", "pod"]);
  const { server, page, errors } = s;
  try {
    await server.write(big.records);
    server.end();
    const view = await waitForView(page, (v) => v.edges.length === 1000, "1,000 edges", 90000);
    assert.equal(view.rows, 1000);
    assert.ok(view.nodes.length >= 50 + 150, `${view.nodes.length} nodes`);
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "1,000 of 1,000 rows" }).waitFor({ timeout: 30000 }));

    // Hover one edge, zoomed in on it: the tooltip names an edge and shows its numbers. (The
    // edge whose middle is farthest from any node, so that no node covers the point.)
    const target = await page.evaluate(() => {
      const cy = window.__flowgraph.cy;
      let best = null;
      cy.edges().forEach((e) => {
        const m = e.midpoint();
        let clear = Infinity;
        cy.nodes().forEach((n) => {
          const p = n.position();
          clear = Math.min(clear, Math.hypot(p.x - m.x, p.y - m.y) - n.width() / 2);
        });
        if (!best || clear > best.clear) best = { e, clear };
      });
      cy.fit(best.e, 150);
      return { from: best.e.data("from"), to: best.e.data("to") };
    });
    const tip = await hoverEdge(page, target.from, target.to);
    const m = tip.match(/^(.*) → (.*)\ntotal (.*) \((.*) B\)/);
    assert.ok(m, `tooltip: ${tip}`);
    const shown = (await describe(page)).edges.find((e) => e.from === m[1] && e.to === m[2]);
    assert.ok(shown, `the tooltip names no drawn edge: ${tip}`);
    assert.equal(m[4].replaceAll(",", ""), String(shown.bytes_total));

    // Still responsive: filtering the table and focusing a node answer quickly.
    await page.locator("#filter").fill("worker-7 ");
    await assert.doesNotReject(page.locator("#rows-caption", { hasText: "20 of 1,000 rows" }).waitFor({ timeout: 15000 }));
    await page.locator("#fit").click();
    assert.equal(await page.evaluate(() => 1 + 1), 2);
    assert.deepEqual(errors, []);
  } catch (e) {
    e.message += `\nserver stderr (tail):\n${server.stderr().slice(-3000)}`;
    throw e;
  } finally {
    await s.close();
  }
});
