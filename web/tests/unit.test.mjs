// Unit tests of the page's pure modules, under node (no browser): number formatting, the SSE
// parser, the graph model's snapshot/delta rules, stable node placement, table filtering.
// Run: node --test web/tests/   (scripts/web test runs these and the browser tests)

import test from "node:test";
import assert from "node:assert/strict";
import { formatBytes, formatCount, formatTime } from "../src/format.js";
import { SseParser } from "../src/sse.js";
import { GraphModel } from "../src/model.js";
import { placeNodes, Occupancy, removeOverlaps } from "../src/layout.js";
import { selectRows } from "../src/table.js";

test("formatBytes uses binary units with one decimal", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(147000), "143.6 KiB");
  assert.equal(formatBytes(21.5 * 1024 * 1024), "21.5 MiB");
  assert.equal(formatBytes(1024 * 1024 - 1), "1.0 MiB"); // not "1024.0 KiB"
  assert.equal(formatBytes(3 * 1024 ** 4), "3.0 TiB");
  assert.equal(formatBytes(undefined), "–");
});

test("formatCount groups thousands without the locale", () => {
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(147000), "147,000");
  assert.equal(formatCount(1234567), "1,234,567");
});

test("formatTime prints event time (ns) as UTC", () => {
  assert.equal(formatTime(1700000062000000000), "2023-11-14 22:14:22 UTC");
  assert.equal(formatTime(null), "–");
});

function parseAll(chunks) {
  const out = [];
  const p = new SseParser((e) => out.push(e));
  for (const c of chunks) p.push(c);
  return out;
}

test("SSE: events, comments, multi-line data, default type", () => {
  const text = ': keep-alive\n\nevent: snapshot\ndata: {"a":1}\n\nevent: delta\ndata: x\ndata: y\n\ndata: plain\n\n';
  const want = [
    { type: "snapshot", data: '{"a":1}' },
    { type: "delta", data: "x\ny" },
    { type: "message", data: "plain" },
  ];
  assert.deepEqual(parseAll([text]), want);
  // Any split of the input gives the same events.
  for (let i = 0; i <= text.length; i++) {
    assert.deepEqual(parseAll([text.slice(0, i), text.slice(i)]), want, `split at ${i}`);
  }
  assert.deepEqual(parseAll([...text]), want, "one character at a time");
});

test("SSE: CRLF and CR line ends, also split between CR and LF", () => {
  const crlf = "event: params\r\ndata: {}\r\n\r\n";
  assert.deepEqual(parseAll([crlf]), [{ type: "params", data: "{}" }]);
  assert.deepEqual(parseAll(["event: params\r", "\ndata: {}\r", "\n\r", "\n"]), [{ type: "params", data: "{}" }]);
  assert.deepEqual(parseAll(["event: params\rdata: {}\r\r"]), [{ type: "params", data: "{}" }]);
  // An event without data is not dispatched, and its type does not leak into the next one.
  assert.deepEqual(parseAll(["event: x\n\ndata: 1\n\n"]), [{ type: "message", data: "1" }]);
  // "data:x" (no space) and an incomplete last event.
  assert.deepEqual(parseAll(["data:x\n\ndata: y\n"]), [{ type: "message", data: "x" }]);
});

const row = (from, to, sent, recv, extra = {}) => ({
  from_entity: from,
  upid: "1:1:1",
  cmdline: "cmd",
  remote_addr: "10.0.0.1",
  to_entity: to,
  bytes_sent: sent,
  bytes_recv: recv,
  bytes_total: sent + recv,
  ...extra,
});
const edge = (from, to, sent, recv) => ({ from_entity: from, to_entity: to, bytes_sent: sent, bytes_recv: recv, bytes_total: sent + recv });

test("model: snapshot replaces, deltas retract and insert by key", () => {
  const m = new GraphModel();
  m.replace({ time: 5, progress: 6, params: { group_by: "pod" }, rows: [row("a", "b", 1, 2)], edges: [edge("a", "b", 1, 2)] });
  assert.equal(m.rows.size, 1);
  assert.equal(m.edges.size, 1);
  m.applyDelta({
    progress: 11,
    time: 10,
    updates: [
      { diff: -1, edge: edge("a", "b", 1, 2) },
      { diff: -1, row: row("a", "b", 1, 2) },
      { diff: 1, row: row("a", "b", 10, 20) },
      { diff: 1, edge: edge("a", "b", 10, 20) },
      { diff: 1, edge: edge("b", "c", 5, 5) },
    ],
  });
  assert.equal(m.time, 10);
  assert.equal(m.progress, 11);
  assert.deepEqual([...m.edges.values()].map((e) => e.bytes_total), [30, 10]);
  assert.equal([...m.rows.values()][0].bytes_total, 30);
  // The insertion of a new value survives a late retraction of the old one.
  m.applyDelta({ updates: [{ diff: 1, edge: edge("b", "c", 6, 6) }, { diff: -1, edge: edge("b", "c", 5, 5) }] });
  assert.equal(m.edges.size, 2);
  assert.equal(m.mismatches, 1);
  m.replace({ time: null, progress: null, rows: [], edges: [] });
  assert.equal(m.edges.size, 0);
  assert.equal(m.time, null);
  assert.deepEqual(m.params, { group_by: "pod" }, "a snapshot without params keeps them");
});

test("layout: existing nodes stay, new nodes go near neighbours, apart from others", () => {
  const existing = new Map([
    ["a", { x: 0, y: 0 }],
    ["b", { x: 300, y: 0 }],
  ]);
  const adj = { c: ["a"], d: ["c"], e: [] };
  const at = placeNodes(existing, ["e", "d", "c"], (id) => adj[id] || []);
  assert.deepEqual([...at.keys()].sort(), ["c", "d", "e"]);
  const dist = (p, q) => Math.hypot(p.x - q.x, p.y - q.y);
  assert.ok(dist(at.get("c"), existing.get("a")) < 200, "c near a");
  assert.ok(dist(at.get("d"), at.get("c")) < 200, "d near c");
  const all = [...existing.values(), ...at.values()];
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) assert.ok(dist(all[i], all[j]) >= 46, "no overlap");
  }
  // Deterministic, and a node that comes back returns to where it was.
  assert.deepEqual(placeNodes(existing, ["c", "d", "e"], (id) => adj[id] || []), at);
  const back = placeNodes(existing, ["c"], () => ["a"], new Map([["c", { x: -500, y: 40 }]]));
  assert.deepEqual(back.get("c"), { x: -500, y: 40 });
});

test("layout: a thousand new nodes around one hub do not overlap", () => {
  const ids = Array.from({ length: 1000 }, (_, i) => `n${i}`);
  const at = placeNodes(new Map([["hub", { x: 0, y: 0 }]]), ids, () => ["hub"]);
  const occ = new Occupancy();
  occ.add({ x: 0, y: 0 });
  for (const id of ids) {
    const p = at.get(id);
    assert.ok(occ.free(p, 45.9), `${id} overlaps`);
    occ.add(p);
  }
});

test("table: filter by words and selection, sort by a column", () => {
  const rows = [
    row("a", "b", 1, 1, { cmdline: "nginx" }),
    row("b", "c", 50, 50, { cmdline: "redis-server", upid: "2:2:2" }),
    row("a", "c", 5, 5, { cmdline: "python app.py" }),
  ];
  assert.deepEqual(selectRows(rows).map((r) => r.bytes_total), [100, 10, 2]);
  assert.deepEqual(selectRows(rows, { sortKey: "bytes_total", sortDir: "asc" }).map((r) => r.bytes_total), [2, 10, 100]);
  assert.deepEqual(selectRows(rows, { sortKey: "cmdline", sortDir: "asc" }).map((r) => r.cmdline), ["nginx", "python app.py", "redis-server"]);
  assert.deepEqual(selectRows(rows, { text: "APP a" }).map((r) => r.cmdline), ["python app.py"]);
  assert.deepEqual(selectRows(rows, { selection: { node: "c" } }).map((r) => r.from_entity), ["b", "a"]);
  assert.deepEqual(selectRows(rows, { selection: { from: "a", to: "b" } }).length, 1);
});

test("parseJson keeps event times as decimal strings, other numbers as numbers", async () => {
  const { parseJson } = await import("../src/api.js");
  const v = parseJson('{"time":1700000062000000000,"progress":null,"edges":[{"bytes_total":5,"time":3}]}');
  assert.equal(v.time, "1700000062000000000");
  assert.equal(v.progress, null);
  assert.equal(v.edges[0].bytes_total, 5);
  // (Exact beyond 2^53 only where JSON.parse gives the source text: the browser tests check that.)
});

test("layout: removeOverlaps separates stacked nodes, deterministically", () => {
  const make = () => [
    ...Array.from({ length: 30 }, () => ({ x: 0, y: 0 })),
    ...Array.from({ length: 30 }, (_, i) => ({ x: (i % 6) * 10, y: Math.floor(i / 6) * 10 })),
  ];
  const a = removeOverlaps(make(), 46, 400);
  let worst = Infinity;
  for (let i = 0; i < a.length; i++) {
    for (let j = i + 1; j < a.length; j++) worst = Math.min(worst, Math.hypot(a[i].x - a[j].x, a[i].y - a[j].y));
  }
  assert.ok(worst > 40, `closest pair ${worst}`);
  assert.deepEqual(removeOverlaps(make(), 46, 400), a);
});
