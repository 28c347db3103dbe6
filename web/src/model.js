// The page's copy of the server's graph: rows and edges keyed as the contract says
// (docs in /api/stream: rows by (from_entity, upid, cmdline, remote_addr), edges by
// (from_entity, to_entity)), kept current by snapshots and deltas. Pure: no DOM, unit-tested.

const SEP = "\u0000";

export const rowKey = (r) => [r.from_entity, r.upid, r.cmdline, r.remote_addr].join(SEP);
export const edgeKey = (e) => e.from_entity + SEP + e.to_entity;

const sameRow = (a, b) =>
  a.to_entity === b.to_entity &&
  a.bytes_sent === b.bytes_sent &&
  a.bytes_recv === b.bytes_recv &&
  a.bytes_total === b.bytes_total;

export class GraphModel {
  constructor() {
    /** @type {Map<string, object>} */
    this.rows = new Map();
    /** @type {Map<string, object>} */
    this.edges = new Map();
    this.time = null;
    this.progress = null;
    this.params = null;
    /** Bumped on every change; views compare it to skip work. */
    this.version = 0;
    /** Bumped only when rows or edges change (a delta without updates just moves time). */
    this.dataVersion = 0;
    /** Updates that did not match the state (a retraction of something absent): a server bug. */
    this.mismatches = 0;
  }

  /** Replaces all state with a snapshot ({time, progress, params, rows, edges}). */
  replace(snap) {
    this.rows = new Map();
    this.edges = new Map();
    for (const r of snap.rows || []) this.rows.set(rowKey(r), r);
    for (const e of snap.edges || []) this.edges.set(edgeKey(e), e);
    this.time = snap.time ?? null;
    this.progress = snap.progress ?? null;
    if (snap.params) this.params = snap.params;
    this.version += 1;
    this.dataVersion += 1;
  }

  /**
   * Applies a delta ({progress, time, updates: [{diff, row} | {diff, edge}]}) in order.
   * A retraction removes the entry only if it holds the retracted value, so an insertion of a
   * key's new value survives the retraction of its old one in either order.
   */
  applyDelta(delta) {
    for (const u of delta.updates || []) {
      const isRow = u.row !== undefined;
      const value = isRow ? u.row : u.edge;
      if (!value) continue;
      const map = isRow ? this.rows : this.edges;
      const key = isRow ? rowKey(value) : edgeKey(value);
      if (u.diff > 0) {
        map.set(key, value);
      } else if (u.diff < 0) {
        const held = map.get(key);
        if (held && sameRow(held, value)) map.delete(key);
        else this.mismatches += 1;
      }
    }
    if ((delta.updates || []).length > 0) this.dataVersion += 1;
    if (delta.progress !== undefined) this.progress = delta.progress;
    if (delta.time !== undefined) this.time = delta.time;
    this.version += 1;
  }

  setParams(params) {
    this.params = params;
    this.version += 1;
  }
}
