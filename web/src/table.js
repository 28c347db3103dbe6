// The rows table: sortable by any column (click a header; again to reverse), filterable by text
// (every word must occur in some column) and by the graph's selection (a node: rows from or to
// it; an edge: rows that make it up). Draws at most MAX_SHOWN rows; the caption says how many
// match, so a large graph stays quick to update.

import { formatBytes, formatCount } from "./format.js";

export const MAX_SHOWN = 1000;

export const COLUMNS = [
  { key: "from_entity", label: "from", numeric: false },
  { key: "to_entity", label: "to", numeric: false },
  { key: "cmdline", label: "cmdline", numeric: false },
  { key: "upid", label: "upid", numeric: false },
  { key: "remote_addr", label: "remote address", numeric: false },
  { key: "bytes_sent", label: "sent", numeric: true },
  { key: "bytes_recv", label: "received", numeric: true },
  { key: "bytes_total", label: "total", numeric: true },
];

/** Rows that pass the text filter and the selection, sorted. Pure: unit-tested. */
export function selectRows(rows, { text = "", selection = null, sortKey = "bytes_total", sortDir = "desc" } = {}) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  const col = COLUMNS.find((c) => c.key === sortKey) || COLUMNS[7];
  const out = [];
  for (const r of rows) {
    if (selection) {
      if (selection.node !== undefined) {
        if (r.from_entity !== selection.node && r.to_entity !== selection.node) continue;
      } else if (r.from_entity !== selection.from || r.to_entity !== selection.to) {
        continue;
      }
    }
    if (words.length > 0) {
      const hay = `${r.from_entity}\n${r.to_entity}\n${r.cmdline}\n${r.upid}\n${r.remote_addr}`.toLowerCase();
      if (!words.every((w) => hay.includes(w))) continue;
    }
    out.push(r);
  }
  const sign = sortDir === "asc" ? 1 : -1;
  const tie = (a, b) =>
    cmp(a.from_entity, b.from_entity) || cmp(a.upid, b.upid) || cmp(a.cmdline, b.cmdline) || cmp(a.remote_addr, b.remote_addr);
  out.sort((a, b) => {
    const x = a[col.key];
    const y = b[col.key];
    const c = col.numeric ? x - y : cmp(x, y);
    return sign * c || tie(a, b);
  });
  return out;
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

export class RowsTable {
  /**
   * @param {HTMLTableElement} table
   * @param {HTMLElement} caption  where "N of M rows" goes
   */
  constructor(table, caption) {
    this.table = table;
    this.caption = caption;
    this.sortKey = "bytes_total";
    this.sortDir = "desc";
    this.text = "";
    this.selection = null;
    this.rows = [];
    this.onChange = () => {};
    this.buildHead();
    this.body = document.createElement("tbody");
    table.append(this.body);
  }

  buildHead() {
    const thead = document.createElement("thead");
    const tr = document.createElement("tr");
    this.heads = new Map();
    for (const c of COLUMNS) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.key = c.key;
      if (c.numeric) th.className = "num";
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = c.label;
      b.addEventListener("click", () => {
        if (this.sortKey === c.key) this.sortDir = this.sortDir === "asc" ? "desc" : "asc";
        else {
          this.sortKey = c.key;
          this.sortDir = c.numeric ? "desc" : "asc";
        }
        this.render();
      });
      th.append(b);
      tr.append(th);
      this.heads.set(c.key, th);
    }
    thead.append(tr);
    this.table.append(thead);
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  setText(text) {
    this.text = text;
    this.render();
  }

  setSelection(sel) {
    this.selection = sel;
    this.render();
  }

  render() {
    for (const [key, th] of this.heads) {
      th.setAttribute("aria-sort", key === this.sortKey ? (this.sortDir === "asc" ? "ascending" : "descending") : "none");
    }
    const shown = selectRows(this.rows, {
      text: this.text,
      selection: this.selection,
      sortKey: this.sortKey,
      sortDir: this.sortDir,
    });
    const frag = document.createDocumentFragment();
    const n = Math.min(shown.length, MAX_SHOWN);
    for (let i = 0; i < n; i++) {
      const r = shown[i];
      const tr = document.createElement("tr");
      for (const c of COLUMNS) {
        const td = document.createElement("td");
        const v = r[c.key];
        if (c.numeric) {
          td.className = "num";
          td.textContent = formatBytes(v);
          td.title = `${formatCount(v)} bytes`;
        } else {
          td.textContent = v;
          td.title = v;
        }
        tr.append(td);
      }
      frag.append(tr);
    }
    this.body.replaceChildren(frag);
    const all = this.rows.length;
    let text = `${formatCount(shown.length)} of ${formatCount(all)} rows`;
    if (shown.length > MAX_SHOWN) text += ` (showing the first ${formatCount(MAX_SHOWN)}: filter to see the rest)`;
    this.caption.textContent = text;
    this.onChange(shown.length, all);
  }
}
