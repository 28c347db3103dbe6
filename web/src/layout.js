// Where a node that joins the graph goes, so that the picture stays put as edges come and go:
// nodes already drawn never move; a new node goes next to the nodes it is connected to (or
// back where it was, if it left and returns), at the nearest free spot. Pure: unit-tested.

const MIN_GAP = 46; // no two node centres closer than this (model units)
const CELL = MIN_GAP;

/** A uniform grid over node centres: "is there a node within MIN_GAP of p" in O(1). */
export class Occupancy {
  constructor() {
    this.cells = new Map();
  }

  key(cx, cy) {
    return `${cx},${cy}`;
  }

  add(p) {
    const k = this.key(Math.floor(p.x / CELL), Math.floor(p.y / CELL));
    let list = this.cells.get(k);
    if (!list) this.cells.set(k, (list = []));
    list.push(p);
  }

  free(p, gap = MIN_GAP) {
    const cx = Math.floor(p.x / CELL);
    const cy = Math.floor(p.y / CELL);
    const reach = Math.ceil(gap / CELL);
    for (let dx = -reach; dx <= reach; dx++) {
      for (let dy = -reach; dy <= reach; dy++) {
        const list = this.cells.get(this.key(cx + dx, cy + dy));
        if (!list) continue;
        for (const q of list) {
          if ((q.x - p.x) ** 2 + (q.y - p.y) ** 2 < gap * gap) return false;
        }
      }
    }
    return true;
  }
}

/** A stable angle in [0, 2π) from a name, so that placement does not depend on arrival order. */
export function nameAngle(name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return ((h >>> 0) / 4294967296) * 2 * Math.PI;
}

/**
 * Positions for new nodes.
 *
 * existing: Map id -> {x, y} of the nodes that stay where they are.
 * added:    ids to place.
 * neighbours(id): ids connected to id (any direction).
 * remembered: Map id -> {x, y} of where nodes were before they left the graph.
 * Returns a Map id -> {x, y} for every id in `added`.
 */
export function placeNodes(existing, added, neighbours, remembered = new Map()) {
  const occ = new Occupancy();
  const pos = new Map(existing);
  let box = null;
  const grow = (p) => {
    if (!box) box = { x1: p.x, y1: p.y, x2: p.x, y2: p.y };
    else {
      box.x1 = Math.min(box.x1, p.x);
      box.y1 = Math.min(box.y1, p.y);
      box.x2 = Math.max(box.x2, p.x);
      box.y2 = Math.max(box.y2, p.y);
    }
  };
  for (const p of existing.values()) {
    occ.add(p);
    grow(p);
  }

  const out = new Map();
  const put = (id, p) => {
    out.set(id, p);
    pos.set(id, p);
    occ.add(p);
    grow(p);
  };

  const left = [...added].sort();
  while (left.length > 0) {
    // Prefer a node that touches something already placed; keep the sorted order otherwise.
    let i = left.findIndex((id) => neighbours(id).some((n) => pos.has(n)));
    if (i < 0) i = 0;
    const id = left.splice(i, 1)[0];
    const back = remembered.get(id);
    if (back && occ.free(back)) {
      put(id, { x: back.x, y: back.y });
      continue;
    }
    const anchors = neighbours(id)
      .map((n) => pos.get(n))
      .filter(Boolean);
    if (anchors.length > 0) {
      const c = {
        x: anchors.reduce((s, p) => s + p.x, 0) / anchors.length,
        y: anchors.reduce((s, p) => s + p.y, 0) / anchors.length,
      };
      put(id, ring(c, nameAngle(id), occ));
    } else {
      // Unconnected to anything drawn: beside the drawing, on its right.
      const start = box ? { x: box.x2 + 140, y: (box.y1 + box.y2) / 2 } : { x: 0, y: 0 };
      put(id, ring(start, nameAngle(id), occ, 0));
    }
  }
  return out;
}

/** The first free spot on growing rings around c, starting from angle a0. */
function ring(c, a0, occ, r0 = 90) {
  if (r0 === 0 && occ.free(c)) return { x: c.x, y: c.y };
  for (let r = r0 || 60; r < 100000; r += 50) {
    const steps = Math.max(8, Math.floor((2 * Math.PI * r) / MIN_GAP));
    for (let k = 0; k < steps; k++) {
      // Alternate sides of the preferred angle: a0, a0+d, a0-d, a0+2d, ...
      const j = k % 2 === 0 ? k / 2 : -(k + 1) / 2;
      const a = a0 + (j * 2 * Math.PI) / steps;
      const p = { x: c.x + r * Math.cos(a), y: c.y + r * Math.sin(a) };
      if (occ.free(p)) return p;
    }
  }
  return { x: c.x, y: c.y };
}

/**
 * Pushes apart nodes closer than `gap` (a force-directed layout of a dense graph leaves some on
 * top of each other). Moves each pair half the missing distance, repeatedly; deterministic.
 * points: array of {x, y}, changed in place.
 */
export function removeOverlaps(points, gap = MIN_GAP, rounds = 60) {
  for (let round = 0; round < rounds; round++) {
    const grid = new Map();
    const cell = (v) => Math.floor(v / gap);
    points.forEach((p, i) => {
      const k = `${cell(p.x)},${cell(p.y)}`;
      if (!grid.has(k)) grid.set(k, []);
      grid.get(k).push(i);
    });
    let moved = false;
    points.forEach((p, i) => {
      const cx = cell(p.x);
      const cy = cell(p.y);
      for (let dx = -1; dx <= 1; dx++) {
        for (let dy = -1; dy <= 1; dy++) {
          for (const j of grid.get(`${cx + dx},${cy + dy}`) || []) {
            if (j <= i) continue;
            const q = points[j];
            let vx = q.x - p.x;
            let vy = q.y - p.y;
            let d = Math.hypot(vx, vy);
            if (d >= gap) continue;
            if (d < 1e-6) {
              // Same spot: split along a direction fixed by the pair's indices.
              const a = ((i * 7919 + j * 104729) % 360) * (Math.PI / 180);
              vx = Math.cos(a);
              vy = Math.sin(a);
              d = 1;
            } else {
              vx /= d;
              vy /= d;
            }
            const push = (gap - Math.max(d, 1e-6)) / 2 + 0.5;
            p.x -= vx * push;
            p.y -= vy * push;
            q.x += vx * push;
            q.y += vy * push;
            moved = true;
          }
        }
      }
    });
    if (!moved) break;
  }
  return points;
}
