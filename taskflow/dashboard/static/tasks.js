// The task list: status filter, search, keyset pages, live rows, bulk cancel and retry.

import { actOnMany, CANCELLABLE, confirmAction, RETRYABLE, summarize } from "./actions.js";
import { api } from "./api.js";
import { badge, byId, el, fill, formatShort, formatTime, throttle } from "./dom.js";

const PAGE_SIZE = 50;
// How many changes of tasks not (yet) shown are remembered, for rows read after them.
const REMEMBERED = 2000;

/** Microseconds since the epoch of an RFC 3339 time (Date.parse keeps milliseconds). */
function micros(iso) {
  const fraction = /\.(\d+)/.exec(iso);
  const extra = fraction ? Number((fraction[1] + "000000").slice(3, 6)) : 0;
  return Date.parse(iso) * 1000 + extra;
}

export class TaskList {
  constructor({ notify }) {
    this.notify = notify;
    this.visible = false;
    this.statuses = [];
    this.q = "";
    this.cursors = []; // the cursors of the pages before this one
    this.cursor = null; // this page's cursor (null: the first page)
    this.next = null;
    this.rows = new Map(); // task id -> {row, task, seq}
    // The latest change of each task that had no row when it arrived: a page read while
    // the change was being committed shows the task as it was, and the change is applied
    // to its row once the row exists (`row()`).
    this.unshown = new Map(); // task id -> change
    // New tasks are shown by reading the first page again, at most twice a second
    // however fast they arrive (one request, not one per task).
    this.readHead = throttle(() => this.fetchHead(), 500);
    this.selected = new Set();
    this.bind();
  }

  bind() {
    byId("task-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      const form = new FormData(event.target);
      const params = new URLSearchParams();
      for (const status of form.getAll("status")) params.append("status", status);
      const q = String(form.get("q") || "").trim();
      if (q) params.set("q", q);
      const query = params.toString();
      location.hash = `#/tasks${query ? `?${query}` : ""}`;
    });
    for (const box of document.querySelectorAll("#task-filter input[name=status]")) {
      box.addEventListener("change", () => byId("task-filter").requestSubmit());
    }
    byId("page-next").addEventListener("click", () => {
      this.cursors.push(this.cursor);
      this.cursor = this.next;
      this.load();
    });
    byId("page-prev").addEventListener("click", () => {
      this.cursor = this.cursors.pop() ?? null;
      this.load();
    });
    byId("page-first").addEventListener("click", () => {
      this.cursors = [];
      this.cursor = null;
      this.load();
    });
    byId("select-all").addEventListener("change", (event) => {
      for (const [id, entry] of this.rows) {
        entry.box.checked = event.target.checked;
        if (event.target.checked) this.selected.add(id);
        else this.selected.delete(id);
      }
      this.updateBulk();
    });
    byId("bulk-cancel").addEventListener("click", () => this.bulk("cancel"));
    byId("bulk-retry").addEventListener("click", () => this.bulk("retry"));
  }

  /** Show the list for a hash query (`status=..&q=..`). */
  show(params) {
    this.visible = true;
    const statuses = params.getAll("status");
    const q = params.get("q") || "";
    for (const box of document.querySelectorAll("#task-filter input[name=status]")) {
      box.checked = statuses.includes(box.value);
    }
    byId("search").value = q;
    if (statuses.join() !== this.statuses.join() || q !== this.q || !this.rows.size) {
      this.cursors = [];
      this.cursor = null;
    }
    this.statuses = statuses;
    this.q = q;
    this.load();
  }

  hide() {
    this.visible = false;
  }

  query(extra = {}) {
    const params = new URLSearchParams();
    for (const status of this.statuses) params.append("status", status);
    if (this.q) params.set("q", this.q);
    params.set("limit", String(PAGE_SIZE));
    if (this.cursor) params.set("cursor", this.cursor);
    for (const [k, v] of Object.entries(extra)) params.set(k, v);
    return params.toString();
  }

  async load() {
    let page;
    try {
      page = await api(`/tasks?${this.query()}`);
    } catch (error) {
      this.notify(`Could not list tasks: ${error.message}`, "error");
      return;
    }
    this.rows.clear();
    this.selected.clear();
    byId("select-all").checked = false;
    fill(byId("task-rows"), ...page.items.map((task) => this.row(task)));
    this.next = page.next_cursor;
    byId("tasks-empty").hidden = page.items.length > 0;
    byId("page-next").disabled = !this.next;
    byId("page-prev").disabled = this.cursors.length === 0;
    byId("page-first").disabled = this.cursor === null;
    this.updateBulk();
  }

  row(task) {
    const box = el("input", { type: "checkbox", "aria-label": `Select ${task.title}` });
    box.addEventListener("change", () => {
      if (box.checked) this.selected.add(task.id);
      else this.selected.delete(task.id);
      this.updateBulk();
    });
    const link = el("a", { href: `#/tasks/${task.id}`, class: "title", text: task.title });
    const row = el(
      "tr",
      { dataset: { id: task.id, status: task.status } },
      el("td", { class: "select" }, box),
      el("td", {}, link),
      el("td", { class: "status" }, badge(task.status)),
      el("td", { class: "wide attempts", text: task.attempts }),
      el("td", { class: "wide", text: task.source }),
      el("td", { class: "created", title: formatTime(task.created_at), text: formatShort(task.created_at) }),
    );
    this.rows.set(task.id, { row, box, task, seq: 0 });
    const missed = this.unshown.get(task.id);
    if (missed) {
      this.unshown.delete(task.id);
      this.changed(missed);
    }
    return row;
  }

  /** Remember a change of a task without a row (the newest per task, a bounded number). */
  remember(change) {
    const known = this.unshown.get(change.task_id);
    if (known && known.seq >= change.seq) return;
    this.unshown.delete(change.task_id);
    this.unshown.set(change.task_id, change);
    if (this.unshown.size > REMEMBERED) this.unshown.delete(this.unshown.keys().next().value);
  }

  /** A status change from the live stream. */
  changed(change) {
    if (!this.visible) return;
    const entry = this.rows.get(change.task_id);
    if (entry) {
      if (change.seq <= entry.seq) return;
      // A row read from the list has no seq: a change older than what it shows is stale.
      if (entry.seq === 0 && micros(change.at) < micros(entry.task.updated_at)) return;
      entry.seq = change.seq;
      entry.task.status = change.status;
      entry.row.dataset.status = change.status;
      entry.row.querySelector(".status").replaceChildren(badge(change.status));
      const attempts = entry.row.querySelector(".attempts");
      if (change.attempt > Number(attempts.textContent)) attempts.textContent = change.attempt;
      const left = this.statuses.length > 0 && !this.statuses.includes(change.status);
      entry.row.classList.toggle("left-filter", left);
      return;
    }
    this.remember(change);
    const isNew = change.seq === 1 && change.status === "new";
    if (isNew && this.cursor === null) this.readHead();
  }

  /** Read the first page again and put the tasks not shown yet on top, in order. */
  async fetchHead() {
    let page;
    try {
      page = await api(`/tasks?${this.query()}`);
    } catch {
      return;
    }
    if (!this.visible || this.cursor !== null) return;
    const body = byId("task-rows");
    const fresh = page.items.filter((task) => !this.rows.has(task.id));
    for (const task of fresh.reverse()) {
      const row = this.row(task);
      row.classList.add("arrived");
      body.prepend(row);
    }
    if (fresh.length) byId("tasks-empty").hidden = true;
  }

  updateBulk() {
    const ids = [...this.selected];
    const tasks = ids.map((id) => this.rows.get(id)?.task).filter(Boolean);
    byId("selected-count").textContent = `${ids.length} selected`;
    byId("bulk-cancel").disabled = !tasks.some((t) => CANCELLABLE.has(t.status));
    byId("bulk-retry").disabled = !tasks.some((t) => RETRYABLE.has(t.status));
  }

  async bulk(action) {
    const ids = [...this.selected];
    if (!ids.length) return;
    const verb = action === "cancel" ? "Cancel" : "Retry";
    const { ok, reason } = await confirmAction(
      `${verb} ${ids.length} task${ids.length === 1 ? "" : "s"}?`,
      action === "cancel"
        ? "New tasks are cancelled at once; running ones are stopped. Finished ones are left as they are."
        : "Failed and cancelled tasks go back to new and run again. Others are left as they are.",
      `${verb} ${ids.length}`,
    );
    if (!ok) return;
    try {
      const results = await actOnMany(action, ids, reason);
      this.notify(`${verb}: ${summarize(results)}`, "ok");
      for (const r of results) {
        const entry = this.rows.get(r.id);
        if (entry && r.status) {
          entry.task.status = r.status;
          entry.row.dataset.status = r.status;
          entry.row.querySelector(".status").replaceChildren(badge(r.status));
        }
      }
      this.updateBulk();
    } catch (error) {
      this.notify(`${verb} failed: ${error.message}`, "error");
    }
  }
}
