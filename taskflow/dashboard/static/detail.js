// One task: every field, payload and result pretty-printed, the error, the history, live;
// Cancel and Retry when its status allows them.

import { act, CANCELLABLE, confirmAction, RETRYABLE } from "./actions.js";
import { api } from "./api.js";
import { byId, el, fill, formatTime, statusLabel, throttle } from "./dom.js";

const FIELDS = [
  ["id", "Id"],
  ["status", "Status"],
  ["source", "Source"],
  ["attempts", "Attempts"],
  ["description", "Description"],
  ["created_at", "Created"],
  ["updated_at", "Updated"],
  ["started_at", "Started"],
  ["finished_at", "Finished"],
  ["cancel_requested_at", "Cancel requested"],
];
const SHOWN_ELSEWHERE = new Set(["title", "payload", "result", "error"]);

export class TaskDetail {
  constructor({ notify }) {
    this.notify = notify;
    this.id = null;
    this.task = null;
    this.reload = throttle(() => this.load(), 250);
    byId("task-cancel").addEventListener("click", () => this.run("cancel"));
    byId("task-retry").addEventListener("click", () => this.run("retry"));
  }

  show(id) {
    if (id !== this.id) {
      this.task = null;
      for (const node of ["task-title", "task-status", "task-payload", "task-history", "task-fields"]) {
        fill(byId(node));
      }
    }
    this.id = id;
    this.load();
  }

  hide() {
    this.id = null;
  }

  changed(change) {
    if (this.id && change.task_id === this.id) this.reload();
  }

  async load() {
    const id = this.id;
    if (!id) return;
    let task;
    let history;
    try {
      [task, history] = await Promise.all([
        api(`/tasks/${encodeURIComponent(id)}`),
        api(`/tasks/${encodeURIComponent(id)}/events`),
      ]);
    } catch (error) {
      if (id === this.id) {
        byId("task-title").textContent = error.status === 404 ? "No such task" : "Could not load the task";
        this.notify(error.message, "error");
      }
      return;
    }
    if (id !== this.id) return;
    this.task = task;
    this.render(task, history.items);
  }

  render(task, events) {
    byId("task-title").textContent = task.title;
    const status = byId("task-status");
    status.className = `badge status-${task.status}`;
    status.textContent = statusLabel(task.status);
    byId("task-cancel").hidden = !CANCELLABLE.has(task.status) || Boolean(task.cancel_requested_at);
    byId("task-retry").hidden = !RETRYABLE.has(task.status);

    const known = new Set(FIELDS.map(([key]) => key));
    const extra = Object.keys(task).filter((k) => !known.has(k) && !SHOWN_ELSEWHERE.has(k));
    const rows = [...FIELDS.filter(([key]) => key in task), ...extra.map((k) => [k, k])];
    fill(
      byId("task-fields"),
      ...rows.flatMap(([key, label]) => {
        const value = task[key];
        const shown = key.endsWith("_at") ? formatTime(value) : value === null ? "—" : String(value);
        return [el("dt", { text: label }), el("dd", { class: key === "id" ? "mono" : null, text: shown })];
      }),
    );
    byId("task-payload").textContent = JSON.stringify(task.payload, null, 2);
    byId("result-panel").hidden = task.result === null || task.result === undefined;
    byId("task-result").textContent = task.result ? JSON.stringify(task.result, null, 2) : "";
    byId("error-panel").hidden = !task.error;
    byId("task-error").textContent = task.error || "";
    fill(
      byId("task-history"),
      ...events.map((e, i) =>
        el(
          "tr",
          { dataset: { status: e.status } },
          el("td", { text: e.seq ?? i + 1 }),
          el("td", {}, el("span", { class: `badge status-${e.status}`, text: statusLabel(e.status) })),
          el("td", { text: e.attempt }),
          el("td", { text: formatTime(e.at) }),
          el("td", { text: e.reason ?? "" }),
        ),
      ),
    );
  }

  async run(action) {
    const task = this.task;
    if (!task) return;
    const cancel = action === "cancel";
    const { ok, reason } = await confirmAction(
      cancel ? "Cancel this task?" : "Retry this task?",
      cancel
        ? `“${task.title}” is ${statusLabel(task.status)}. Cancelling stops it; a running attempt is stopped within a second.`
        : `“${task.title}” is ${statusLabel(task.status)}. Retrying makes it new again, for attempt ${task.attempts + 1}.`,
      cancel ? "Cancel task" : "Retry task",
    );
    if (!ok) return;
    try {
      const updated = await act(action, task.id, reason);
      const outcome = cancel
        ? updated.status === "cancelled" ? "cancelled" : "cancel requested"
        : "retried";
      this.notify(`Task ${outcome} (now ${statusLabel(updated.status)}).`, "ok");
    } catch (error) {
      this.notify(`${cancel ? "Cancel" : "Retry"} refused: ${error.message}`, "error");
    }
    this.load();
  }
}
