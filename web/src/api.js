// Talking to the server: the token, JSON requests, and the event stream (read with fetch so
// that it can carry the Authorization header; parsed by ./sse.js).

import { SseParser } from "./sse.js";

const TOKEN_KEY = "flowgraph.token";

/**
 * Takes a token from the address's fragment (#token=...), keeps it in sessionStorage and strips
 * it from the address bar, so that it is not left in the history or copied with the link.
 */
export function initToken() {
  const hash = window.location.hash.replace(/^#/, "");
  if (hash) {
    const params = new URLSearchParams(hash);
    const token = params.get("token");
    if (token !== null) {
      params.delete("token");
      try {
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch {
        memoryToken = token;
      }
      const rest = params.toString();
      const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
      window.history.replaceState(null, "", url);
    }
  }
}

let memoryToken = null;

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

export function setToken(token) {
  memoryToken = token || null;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the in-memory copy serves this page */
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

// Event times are nanoseconds since the epoch, past 2^53: as JS numbers they would be off by up
// to 256 ns (a complete time P-1 would read as P). Keep them as exact decimal strings, from the
// JSON source text where the browser gives it (JSON.parse source access, Chrome 114+).
const TIME_KEYS = new Set(["time", "progress", "effective_from"]);

export function parseJson(text) {
  return JSON.parse(text, function (key, value, context) {
    if (TIME_KEYS.has(key) && typeof value === "number") {
      return context && typeof context.source === "string" ? context.source : String(value);
    }
    return value;
  });
}

/** An error the server answered with: `{error, field}` and the HTTP status. */
export class ApiError extends Error {
  constructor(status, error, field) {
    super(error);
    this.status = status;
    this.field = field || null;
  }
}

async function errorFrom(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return new ApiError(res.status, body.error, body.field);
  } catch {
    /* not JSON: use the text */
  }
  return new ApiError(res.status, text.trim() || `HTTP ${res.status} ${res.statusText}`, null);
}

/** GET or PUT a JSON resource under api/ (relative, so the page also works under a path prefix). */
export async function apiJson(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers({ Accept: "application/json" }), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`api/${path}`, init);
  if (!res.ok) throw await errorFrom(res);
  return parseJson(await res.text());
}

/**
 * Follows api/stream until stop() is called, reconnecting with a growing pause (0.5 s to 10 s)
 * when it ends or fails. Every connection starts with a snapshot, so nothing is resumed.
 *
 * handlers: onEvent({type, data}) for snapshot/delta/params with parsed data;
 *           onStatus({state: "connecting"|"live"|"retrying"|"error", error?: ApiError|Error})
 */
export function followStream({ onEvent, onStatus }) {
  let stopped = false;
  let controller = null;
  let pause = 500;

  async function once() {
    controller = new AbortController();
    onStatus({ state: "connecting" });
    const res = await fetch("api/stream", {
      headers: headers({ Accept: "text/event-stream" }),
      cache: "no-store",
      signal: controller.signal,
    });
    if (!res.ok) throw await errorFrom(res);
    if (!res.body) throw new Error("the browser gave no response body for the stream");
    const parser = new SseParser((ev) => {
      let data;
      try {
        data = parseJson(ev.data);
      } catch (e) {
        console.warn("flowgraph: a stream event that is not JSON", ev.type, e);
        return;
      }
      if (ev.type === "snapshot") {
        pause = 500; // a good connection resets the back-off
        onStatus({ state: "live" });
      }
      onEvent({ type: ev.type, data });
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
        if (stopped) break;
        onStatus({ state: "retrying", error: new Error("the server closed the stream") });
      } catch (e) {
        if (stopped) break;
        // 401: no point asking again soon; the page asks for a token and restarts us.
        onStatus({ state: e instanceof ApiError && e.status === 401 ? "error" : "retrying", error: e });
        if (e instanceof ApiError && e.status === 401) {
          pause = 10000;
        }
      }
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 10000);
    }
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
