// The graph drawing: cytoscape on a canvas. Nodes are the entities (anything that appears as
// a from_entity) and the remote endpoints (to_entity only); an edge's width grows with the log of
// its bytes_total. Keeps the layout stable: a full force-directed layout (fcose) runs only when
// most of the picture is new (first data, a regroup) or on request; otherwise nodes stay put and
// new ones are placed next to their neighbours (./layout.js).

import cytoscape from "cytoscape";
import fcose from "cytoscape-fcose";
import { formatBytes, formatCount } from "./format.js";
import { placeNodes, removeOverlaps } from "./layout.js";

cytoscape.use(fcose);

const SEP = "\u0000";
const edgeId = (from, to) => `e${SEP}${from}${SEP}${to}`;

const STYLE = [
  {
    selector: "node",
    style: {
      "background-color": "#3b6fd8",
      "border-width": 1,
      "border-color": "#1d3f87",
      width: "data(size)",
      height: "data(size)",
      label: "data(id)",
      "font-size": 11,
      "font-family": "system-ui, sans-serif",
      color: "#1b2330",
      "text-valign": "bottom",
      "text-margin-y": 4,
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.75,
      "text-background-padding": 1,
      "min-zoomed-font-size": 8,
    },
  },
  {
    selector: "node.remote",
    style: {
      shape: "round-diamond",
      "background-color": "#a3acbb",
      "border-color": "#6b7384",
    },
  },
  {
    selector: "edge",
    style: {
      width: "data(w)",
      "line-color": "#8d99ad",
      "target-arrow-color": "#8d99ad",
      "target-arrow-shape": "triangle",
      "arrow-scale": 0.6,
      "curve-style": "bezier",
      opacity: "data(op)",
      // A wider hover/tap target than the drawn line, so that thin edges are easy to point at.
      "overlay-padding": 4,
    },
  },
  { selector: "edge.hover", style: { "line-color": "#e8590c", "target-arrow-color": "#e8590c", opacity: 1, "z-index": 10 } },
  { selector: "node.hover", style: { "border-width": 3, "border-color": "#e8590c" } },
  { selector: "node.focus", style: { "border-width": 3, "border-color": "#e8590c" } },
  { selector: "edge.focus", style: { "line-color": "#e8590c", "target-arrow-color": "#e8590c", opacity: 1 } },
  { selector: ".faded", style: { opacity: 0.15, "text-opacity": 0.3 } },
];

/** A small deterministic PRNG (mulberry32): the same data gives the same full layout. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class GraphView {
  /**
   * @param {HTMLElement} container  the element cytoscape draws in
   * @param {HTMLElement} tooltip    an absolutely positioned element inside container's parent
   * @param {{onSelect: (sel: null | {node: string} | {from: string, to: string}) => void}} opts
   */
  constructor(container, tooltip, { onSelect }) {
    this.container = container;
    this.tooltip = tooltip;
    this.onSelect = onSelect;
    this.remembered = new Map();
    this.userMoved = false;
    this.programmatic = 0;
    this.focus = null;
    this.cy = cytoscape({
      container,
      style: STYLE,
      minZoom: 0.05,
      maxZoom: 4,
      boxSelectionEnabled: false,
      autounselectify: true,
    });
    this.wire();
  }

  wire() {
    const cy = this.cy;
    cy.on("viewport", () => {
      if (this.programmatic === 0) this.userMoved = true;
    });
    cy.on("mouseover", "edge", (ev) => {
      ev.target.addClass("hover");
      this.showTip(ev.renderedPosition, this.edgeTip(ev.target));
    });
    cy.on("mousemove", "edge", (ev) => this.moveTip(ev.renderedPosition));
    cy.on("mouseout", "edge", (ev) => {
      ev.target.removeClass("hover");
      this.hideTip();
    });
    cy.on("mouseover", "node", (ev) => {
      ev.target.addClass("hover");
      this.showTip(ev.renderedPosition, this.nodeTip(ev.target));
    });
    cy.on("mousemove", "node", (ev) => this.moveTip(ev.renderedPosition));
    cy.on("mouseout", "node", (ev) => {
      ev.target.removeClass("hover");
      this.hideTip();
    });
    cy.on("tap", "node", (ev) => this.onSelect({ node: ev.target.id() }));
    cy.on("tap", "edge", (ev) => this.onSelect({ from: ev.target.data("from"), to: ev.target.data("to") }));
    cy.on("tap", (ev) => {
      if (ev.target === cy) this.onSelect(null);
    });
    cy.on("grab", "node", () => this.hideTip());
    // Leaving the canvas quickly gives cytoscape no mouseout: clear the hover here.
    this.container.addEventListener("mouseleave", () => {
      cy.elements(".hover").removeClass("hover");
      this.hideTip();
    });
  }

  edgeTip(edge) {
    const d = edge.data();
    return [
      { text: `${d.from} → ${d.to}`, cls: "tip-title" },
      { text: `total ${formatBytes(d.total)} (${formatCount(d.total)} B)` },
      { text: `sent ${formatBytes(d.sent)} · received ${formatBytes(d.recv)}` },
    ];
  }

  nodeTip(node) {
    let out = 0;
    let inn = 0;
    node.outgoers("edge").forEach((e) => (out += e.data("total")));
    node.incomers("edge").forEach((e) => (inn += e.data("total")));
    const kind = node.hasClass("remote") ? "remote endpoint" : "entity";
    return [
      { text: node.id(), cls: "tip-title" },
      { text: `${kind} · ${node.outgoers("edge").length} out, ${node.incomers("edge").length} in` },
      { text: `as source ${formatBytes(out)} · as destination ${formatBytes(inn)}` },
      { text: "click to filter the table", cls: "tip-hint" },
    ];
  }

  showTip(at, lines) {
    const tip = this.tooltip;
    tip.replaceChildren(
      ...lines.map((l) => {
        const div = document.createElement("div");
        div.textContent = l.text;
        if (l.cls) div.className = l.cls;
        return div;
      }),
    );
    tip.hidden = false;
    this.moveTip(at);
  }

  moveTip(at) {
    const tip = this.tooltip;
    if (tip.hidden || !at) return;
    const w = this.container.clientWidth;
    const h = this.container.clientHeight;
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    let x = at.x + 14;
    let y = at.y + 14;
    if (x + tw > w) x = Math.max(0, at.x - tw - 14);
    if (y + th > h) y = Math.max(0, at.y - th - 14);
    tip.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  }

  hideTip() {
    this.tooltip.hidden = true;
  }

  /** Brings the drawing in line with the model's edges. */
  update(edges) {
    const cy = this.cy;
    const wanted = new Map(); // edge id -> edge
    const nodes = new Map(); // node id -> {remote: bool}
    const adj = new Map();
    let maxTotal = 1;
    const link = (a, b) => {
      if (!adj.has(a)) adj.set(a, []);
      adj.get(a).push(b);
    };
    for (const e of edges) {
      wanted.set(edgeId(e.from_entity, e.to_entity), e);
      nodes.set(e.from_entity, { remote: false, total: 0 });
      link(e.from_entity, e.to_entity);
      link(e.to_entity, e.from_entity);
      maxTotal = Math.max(maxTotal, e.bytes_total);
    }
    for (const e of edges) {
      if (!nodes.has(e.to_entity)) nodes.set(e.to_entity, { remote: true, total: 0 });
      nodes.get(e.from_entity).total += e.bytes_total;
      nodes.get(e.to_entity).total += e.bytes_total;
    }
    let maxNode = 1;
    for (const n of nodes.values()) maxNode = Math.max(maxNode, n.total);
    // Many edges: thinner and lighter, so that the picture does not turn into one blot.
    const n = wanted.size;
    const extra = n > 300 ? 3 : n > 100 ? 6 : 9;
    const width = (b) => 1 + (extra * Math.log1p(b)) / Math.log1p(maxTotal);
    const opacity = n > 300 ? 0.45 : n > 100 ? 0.65 : 0.85;

    const size = (b) => 16 + (20 * Math.log1p(b)) / Math.log1p(maxNode);

    let added = [];
    let full = false;
    cy.batch(() => {
      cy.edges().forEach((el) => {
        if (!wanted.has(el.id())) el.remove();
      });
      cy.nodes().forEach((el) => {
        if (!nodes.has(el.id())) {
          this.remembered.set(el.id(), { ...el.position() });
          el.remove();
        }
      });
      const existing = new Map();
      cy.nodes().forEach((el) => existing.set(el.id(), { ...el.position() }));
      added = [...nodes.keys()].filter((id) => !existing.has(id));
      // Most of the picture is new (first data, a regroup): lay it all out afresh.
      full = added.length > 0 && added.length > existing.size;
      const at = full ? new Map() : placeNodes(existing, added, (id) => adj.get(id) || [], this.remembered);
      cy.add(
        added.sort().map((id) => ({
          group: "nodes",
          data: { id },
          position: at.get(id) || { x: 0, y: 0 },
        })),
      );
      for (const [id, n] of nodes) {
        const el = cy.getElementById(id);
        const sz = size(n.total);
        if (el.data("size") !== sz) el.data("size", sz);
        if (el.hasClass("remote") !== n.remote) el.toggleClass("remote", n.remote);
      }
      const newEdges = [];
      for (const [id, e] of wanted) {
        const data = {
          from: e.from_entity,
          to: e.to_entity,
          total: e.bytes_total,
          sent: e.bytes_sent,
          recv: e.bytes_recv,
          w: width(e.bytes_total),
          op: opacity,
        };
        const el = cy.getElementById(id);
        if (el.nonempty()) {
          // Only a changed edge is touched: cytoscape restyles what it is given.
          const old = el.data();
          if (old.total !== data.total || old.sent !== data.sent || old.recv !== data.recv || old.w !== data.w || old.op !== data.op) {
            el.data(data);
          }
        }
        else newEdges.push({ group: "edges", data: { id, source: e.from_entity, target: e.to_entity, ...data } });
      }
      newEdges.sort((a, b) => (a.data.id < b.data.id ? -1 : a.data.id > b.data.id ? 1 : 0));
      cy.add(newEdges);
    });
    if (full) this.layout();
    else if (added.length > 0 && !this.userMoved) this.fit();
    this.applyFocus();
  }

  /** A full layout of everything (fcose), then fit to the window. Deterministic. */
  layout() {
    const cy = this.cy;
    if (cy.nodes().empty()) return;
    const count = cy.nodes().length;
    const dense = count > 100;
    const random = Math.random;
    Math.random = seeded(0x5eed); // fcose draws its initial positions from Math.random
    try {
      cy.layout({
        name: "fcose",
        quality: "default",
        randomize: true,
        animate: false,
        fit: false,
        nodeDimensionsIncludeLabels: false,
        idealEdgeLength: () => (dense ? 150 : 90),
        nodeRepulsion: () => (dense ? 60000 : 6500),
        packComponents: true,
      }).run();
      // Stretch it sideways towards the pane's shape (force layouts come out round, the pane is
      // wide), then make sure no two nodes sit on top of each other.
      const nodes = cy.nodes();
      const pts = nodes.map((n) => ({ ...n.position() }));
      const bb = nodes.boundingBox();
      const pane = this.container.clientWidth / Math.max(1, this.container.clientHeight);
      const stretch = Math.min(1.8, Math.max(1, pane / Math.max(0.1, bb.w / Math.max(1, bb.h))));
      for (const p of pts) p.x = bb.x1 + (p.x - bb.x1) * stretch;
      removeOverlaps(pts);
      nodes.positions((n, i) => pts[i]);
    } finally {
      Math.random = random;
    }
    this.remembered.clear();
    this.userMoved = false;
    this.fit();
  }

  fit() {
    this.programmatic += 1;
    try {
      const cy = this.cy;
      cy.fit(undefined, 30);
      // A small graph would be blown up to fill the pane: keep it at a readable size instead.
      if (cy.zoom() > 1.2) {
        cy.zoom(1.2);
        cy.center();
      }
    } finally {
      this.programmatic -= 1;
    }
    this.userMoved = false;
  }

  resize() {
    this.cy.resize();
    if (!this.userMoved) this.fit();
  }

  /** Emphasises a node and its edges, or one edge; fades the rest. null clears. */
  setFocus(sel) {
    this.focus = sel;
    this.applyFocus();
  }

  applyFocus() {
    const cy = this.cy;
    cy.batch(() => {
      cy.elements().removeClass("focus faded");
      const sel = this.focus;
      if (!sel) return;
      let keep;
      if (sel.node !== undefined) {
        const n = cy.getElementById(sel.node);
        if (n.empty()) return;
        keep = n.closedNeighborhood();
        n.addClass("focus");
        n.connectedEdges().addClass("focus");
      } else {
        const e = cy.getElementById(edgeId(sel.from, sel.to));
        if (e.empty()) return;
        keep = e.union(e.connectedNodes());
        e.addClass("focus");
      }
      cy.elements().difference(keep).addClass("faded");
    });
  }

  /** For tests and debugging: what is drawn, in plain data. */
  describe() {
    const rect = this.container.getBoundingClientRect();
    return {
      nodes: this.cy.nodes().map((n) => ({
        id: n.id(),
        kind: n.hasClass("remote") ? "remote" : "entity",
        x: n.position("x"),
        y: n.position("y"),
      })),
      edges: this.cy.edges().map((e) => {
        const d = e.data();
        const mid = e.renderedMidpoint();
        return {
          from: d.from,
          to: d.to,
          bytes_total: d.total,
          bytes_sent: d.sent,
          bytes_recv: d.recv,
          width: d.w,
          // Where to point the mouse to hover this edge (page coordinates).
          pageX: rect.left + mid.x,
          pageY: rect.top + mid.y,
        };
      }),
    };
  }
}
