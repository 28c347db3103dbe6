// The query's variables, editable in the page like Pixie's script variables: ips (text),
// window (text with suggestions), group_by (a select of the server's choices). A change is sent
// with PUT api/params at once (Enter or leaving a text field; choosing in the select); the
// server's answer is shown: its error text under the bar, or when the change takes effect.

import { apiJson, ApiError } from "./api.js";
import { formatTime } from "./format.js";

const FIELDS = ["ips", "window", "group_by"];

export class ParamsBar {
  /**
   * @param {{form: HTMLFormElement, ips: HTMLInputElement, window: HTMLInputElement,
   *          group_by: HTMLSelectElement, error: HTMLElement, note: HTMLElement}} els
   * @param {{onAuthError: (e: ApiError) => void}} opts
   */
  constructor(els, { onAuthError }) {
    this.els = els;
    this.onAuthError = onAuthError;
    this.server = null; // the last values the server told us
    this.pending = 0;
    for (const f of ["ips", "window"]) {
      els[f].addEventListener("change", () => this.send(f));
    }
    els.group_by.addEventListener("change", () => this.send("group_by"));
    els.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const changed = FIELDS.filter((f) => this.server && this.els[f].value !== this.server[f]);
      if (changed.length > 0) this.send(...changed);
    });
    for (const f of FIELDS) {
      els[f].addEventListener("keydown", (ev) => {
        if (ev.key === "Escape" && this.server) {
          els[f].value = this.server[f];
          this.clearError();
        }
      });
    }
  }

  async load() {
    try {
      const p = await apiJson("params");
      this.show(p, { force: true });
      this.setEditable(p.editable !== false);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) this.onAuthError(e);
      else this.showError(e);
      return false;
    }
  }

  setEditable(editable) {
    for (const f of FIELDS) this.els[f].disabled = !editable;
    this.els.form.classList.toggle("readonly", !editable);
    if (!editable) this.els.note.textContent = "read-only: this view follows a running pipeline";
  }

  /** Shows the server's params; a field the user is editing (focused and changed) keeps its text. */
  show(p, { force = false } = {}) {
    const prev = this.server;
    this.server = { ips: p.ips ?? "", window: p.window ?? "", group_by: p.group_by ?? "" };
    if (Array.isArray(p.group_by_choices)) {
      const sel = this.els.group_by;
      const have = [...sel.options].map((o) => o.value).join("\n");
      if (have !== p.group_by_choices.join("\n")) {
        sel.replaceChildren(
          ...p.group_by_choices.map((c) => {
            const o = document.createElement("option");
            o.value = c;
            o.textContent = c;
            return o;
          }),
        );
      }
    }
    for (const f of FIELDS) {
      const el = this.els[f];
      const editing = document.activeElement === el && prev && el.value !== prev[f];
      if (force || !editing) el.value = this.server[f];
    }
    if (this.els.group_by.value !== this.server.group_by && this.server.group_by) {
      // A choice the select does not list yet (choices not loaded): add it.
      const o = document.createElement("option");
      o.value = o.textContent = this.server.group_by;
      this.els.group_by.append(o);
      this.els.group_by.value = this.server.group_by;
    }
  }

  async send(...fields) {
    const body = {};
    for (const f of fields) body[f] = this.els[f].value.trim();
    this.pending += 1;
    this.els.form.setAttribute("aria-busy", "true");
    try {
      const p = await apiJson("params", { method: "PUT", body });
      this.clearError();
      this.show(p, { force: true });
      const when = p.effective_from !== undefined ? ` from ${formatTime(p.effective_from)}` : "";
      this.els.note.textContent = `applied${when}`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) this.onAuthError(e);
      this.showError(e, e instanceof ApiError ? e.field : null);
    } finally {
      this.pending -= 1;
      if (this.pending === 0) this.els.form.removeAttribute("aria-busy");
    }
  }

  showError(e, field = null) {
    this.clearError();
    this.els.error.textContent = e instanceof ApiError ? e.message : `request failed: ${e.message}`;
    this.els.error.hidden = false;
    this.els.note.textContent = "";
    if (field && this.els[field]) {
      this.els[field].setAttribute("aria-invalid", "true");
      this.els[field].setAttribute("aria-describedby", this.els.error.id);
    }
  }

  clearError() {
    this.els.error.hidden = true;
    this.els.error.textContent = "";
    for (const f of FIELDS) {
      this.els[f].removeAttribute("aria-invalid");
      this.els[f].removeAttribute("aria-describedby");
    }
  }
}
