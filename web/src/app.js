// The live view: follows api/stream into a GraphModel and draws it as a graph and a table.
// Modules: api.js (token, requests, stream), sse.js (stream parser), model.js (state),
// graph.js + layout.js (drawing), table.js (rows), params.js (variables), format.js (numbers).

import { initToken, setToken, followStream, ApiError } from "./api.js";
import { GraphModel } from "./model.js";
import { GraphView } from "./graph.js";
import { RowsTable } from "./table.js";
import { ParamsBar } from "./params.js";
import { formatCount, formatTime } from "./format.js";

const $ = (id) => document.getElementById(id);

initToken();

const model = new GraphModel();
let selection = null;
let drawn = -1; // model.version of the last render
let drawnData = -1; // model.dataVersion of the last render
let renders = 0;
let shown = { time: null, progress: null, params: null, rows: 0 }; // what the last render drew
let stream = null;
let lastStatus = { state: "connecting" };

const graph = new GraphView($("graph"), $("tooltip"), { onSelect: select });
const table = new RowsTable($("rows"), $("rows-caption"));
const params = new ParamsBar(
  {
    form: $("params"),
    ips: $("p-ips"),
    window: $("p-window"),
    group_by: $("p-group_by"),
    error: $("params-error"),
    note: $("params-note"),
  },
  { onAuthError: authError },
);

$("filter").addEventListener("input", (ev) => table.setText(ev.target.value));
$("selection-clear").addEventListener("click", () => select(null));
$("fit").addEventListener("click", () => graph.fit());
$("relayout").addEventListener("click", () => graph.layout());
window.addEventListener("resize", () => graph.resize());
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken($("token-input").value.trim());
  $("token-input").value = "";
  start();
});

function select(sel) {
  selection = sel;
  table.setSelection(sel);
  graph.setFocus(sel);
  const chip = $("selection");
  if (!sel) {
    chip.hidden = true;
    return;
  }
  $("selection-text").textContent = sel.node !== undefined ? `node ${sel.node}` : `edge ${sel.from} → ${sel.to}`;
  chip.hidden = false;
}

let scheduled = false;
function scheduleRender() {
  if (scheduled) return;
  scheduled = true;
  // Many deltas in one frame are drawn once. A hidden tab gets no animation frames: the timer
  // still draws it, at most every 250 ms.
  const run = () => {
    if (!scheduled) return;
    scheduled = false;
    render();
  };
  requestAnimationFrame(run);
  setTimeout(run, 250);
}

function render() {
  if (drawn !== model.version) {
    drawn = model.version;
    if (drawnData !== model.dataVersion) {
      drawnData = model.dataVersion;
      graph.update([...model.edges.values()]);
      table.setRows([...model.rows.values()]);
    }
    renders += 1;
    shown = { time: model.time, progress: model.progress, params: model.params, rows: model.rows.size };
    const nodes = graph.cy.nodes().length;
    $("graph-summary").textContent = `${formatCount(nodes)} nodes · ${formatCount(model.edges.size)} edges`;
    const empty = $("empty");
    if (model.edges.size === 0) {
      empty.textContent =
        model.time === null ? "waiting for the first complete time from the input…" : "no traffic in the window for these parameters";
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
  }
  showStatus();
}

function showStatus() {
  const s = lastStatus;
  const el = $("status");
  el.dataset.state = s.state;
  let text;
  switch (s.state) {
    case "live":
      text = model.time === null ? "live · no complete time yet" : `live · graph at ${formatTime(model.time)}`;
      break;
    case "connecting":
      text = "connecting…";
      break;
    case "retrying":
      text = `disconnected, retrying${s.error ? ` (${s.error.message})` : ""}`;
      break;
    default:
      text = s.error ? s.error.message : "error";
  }
  $("status-text").textContent = text;
}

function authError(e) {
  $("banner-text").textContent = `not authorized: ${e.message}. Open the page as …/#token=TOKEN, or enter the token:`;
  $("token-form").hidden = false;
  $("banner").hidden = false;
  $("banner").dataset.kind = "auth";
}

function clearBanner() {
  $("banner").hidden = true;
  $("token-form").hidden = true;
  $("banner-text").textContent = "";
}

function onStatus(s) {
  lastStatus = s;
  if (s.error instanceof ApiError && s.error.status === 401) {
    authError(s.error);
    if (stream) stream.stop();
    stream = null;
  } else if (s.state === "live") {
    clearBanner();
  }
  showStatus();
}

function onEvent({ type, data }) {
  if (type === "snapshot") {
    model.replace(data);
    if (data.params) params.show(data.params);
  } else if (type === "delta") {
    model.applyDelta(data);
  } else if (type === "params") {
    model.setParams(data);
    params.show(data);
  }
  scheduleRender();
}

async function start() {
  if (stream) stream.stop();
  clearBanner();
  if (await params.load()) {
    stream = followStream({ onEvent, onStatus });
  }
}

// For tests and debugging from the console: what the page holds and draws.
window.__flowgraph = {
  describe: () => ({
    ...graph.describe(),
    ...shown,
    renders,
    status: lastStatus.state,
    mismatches: model.mismatches,
  }),
  get cy() {
    return graph.cy;
  },
};

render();
start();
