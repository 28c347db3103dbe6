// Shared by the browser tests and web/screenshot.mjs: start the real `flowgraph ui`, launch
// Debian's Chromium through playwright-core, read the page's state.

import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = join(WEB, "..");
export const BIN = process.env.FLOWGRAPH_BIN || join(ROOT, "target/release/flowgraph");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Fails (never skips) when the browser or the binary is missing, saying how to get them. */
export function requireTools() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is missing (${CHROMIUM}): run scripts/setup (installs Debian's chromium), or set CHROMIUM`);
  }
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} is missing: build it first (cargo build --release --bin flowgraph)`);
  }
}

/**
 * Starts `flowgraph ui --listen 127.0.0.1:0 ARGS...` and waits for its one stdout line
 * "flowgraph ui: live view at http://HOST:PORT/". With `--input -` the records come from
 * write(); end() closes its stdin (the input ends).
 */
export async function startServer(args, { timeoutMs = 30000 } = {}) {
  requireTools();
  const proc = spawn(BIN, ["ui", "--listen", "127.0.0.1:0", ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
  });
  let stderr = "";
  let stdout = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > 200000) stderr = stderr.slice(-100000);
  });
  proc.stdin.on("error", () => {}); // EPIPE if the server died: reported by the waits below
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`flowgraph ui printed no URL within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, timeoutMs);
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (d) => {
      stdout += d;
      const m = stdout.match(/^flowgraph ui: live view at (http:\/\/\S+\/)\s*$/m);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`flowgraph ui exited (${code ?? signal}) before printing its URL; stderr: ${stderr}`));
    });
  });
  return {
    url,
    proc,
    stderr: () => stderr,
    /** Writes records (objects or JSON lines) to the server's stdin. */
    async write(records) {
      const text = records.map((r) => (typeof r === "string" ? r : JSON.stringify(r)) + "\n").join("");
      if (!proc.stdin.write(text)) await new Promise((r) => proc.stdin.once("drain", r));
    },
    /** Closes stdin: the input ends. */
    end() {
      proc.stdin.end();
    },
    /** SIGTERM, then SIGKILL after 5 s. */
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function launchBrowser() {
  requireTools();
  // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
}

/** A request to the server from the test itself (to learn what the page should show). */
export async function api(server, path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(new URL(`api/${path}`, server.url), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

/** The page's own account of what it holds and draws (window.__flowgraph.describe()). */
export function describe(page) {
  return page.evaluate(() => window.__flowgraph.describe());
}

/** Waits until pred(describe(page)) holds; the error shows the last state seen. */
export async function waitForView(page, pred, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await describe(page);
    if (pred(last)) return last;
    if (Date.now() > deadline) {
      const brief = {
        time: last.time,
        status: last.status,
        params: last.params,
        rows: last.rows,
        nodes: last.nodes.map((n) => n.id).slice(0, 20),
        edges: last.edges.length,
      };
      throw new Error(`timed out waiting for ${what}; the page has ${JSON.stringify(brief)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The golden case's files. */
export function golden(name) {
  const dir = join(ROOT, "tests/golden", name);
  const lines = (f) =>
    readFileSync(join(dir, f), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l));
  return {
    input: lines("input.jsonl"),
    deltas: lines("expected.deltas.jsonl"),
    snapshot: JSON.parse(readFileSync(join(dir, "expected.snapshot.json"), "utf8")),
    args: readFileSync(join(dir, "args"), "utf8").split("\n").filter(Boolean),
  };
}

/**
 * The graph at a complete time, from the golden deltas: every update with time < frontier.
 * (The golden run's lateness only shifts when times complete, not what they hold.)
 */
export function goldenStateBefore(deltas, frontier) {
  const rows = new Map();
  const edges = new Map();
  for (const d of deltas) {
    if (d.time === undefined || BigInt(d.time) >= BigInt(frontier)) continue;
    const v = d.row || d.edge;
    const key = d.row ? JSON.stringify([v.from_entity, v.upid, v.cmdline, v.remote_addr]) : JSON.stringify([v.from_entity, v.to_entity]);
    const m = d.row ? rows : edges;
    if (d.diff > 0) m.set(key, v);
    else m.delete(key);
  }
  return { rows: [...rows.values()], edges: [...edges.values()] };
}

/** Edges as sorted "from -> to total/sent/recv" lines, for comparing page and server. */
export function edgeLines(edges) {
  return edges
    .map((e) => `${e.from_entity ?? e.from} -> ${e.to_entity ?? e.to} ${e.bytes_total}/${e.bytes_sent}/${e.bytes_recv}`)
    .sort();
}

export function nodeNames(edges) {
  const s = new Set();
  for (const e of edges) {
    s.add(e.from_entity ?? e.from);
    s.add(e.to_entity ?? e.to);
  }
  return [...s].sort();
}
