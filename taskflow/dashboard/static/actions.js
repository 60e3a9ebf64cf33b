// Cancel and retry, one task or many, always after a confirmation.

import { api } from "./api.js";
import { byId } from "./dom.js";

/** Ask the operator to confirm `text`; resolves to {ok, reason}. */
export function confirmAction(title, text, confirmLabel) {
  const dialog = byId("confirm");
  const reason = byId("confirm-reason");
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  byId("confirm-yes").textContent = confirmLabel;
  reason.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve({ ok: dialog.returnValue === "ok", reason: reason.value.trim() }),
      { once: true },
    );
    dialog.showModal();
    byId("confirm-no").focus();
  });
}

function withReason(body, reason) {
  return reason ? { ...body, reason } : body;
}

/** POST /tasks/{id}/cancel or /retry; resolves to the task. */
export function act(action, id, reason) {
  return api(`/tasks/${encodeURIComponent(id)}/${action}`, {
    method: "POST",
    body: withReason({}, reason),
  });
}

/** POST /tasks/cancel or /retry with many ids; resolves to the per-id results. */
export async function actOnMany(action, ids, reason) {
  const answer = await api(`/tasks/${action}`, {
    method: "POST",
    body: withReason({ ids }, reason),
  });
  return answer.results;
}

/** "2 cancelled, 1 conflict" from bulk results. */
export function summarize(results) {
  const counts = new Map();
  for (const r of results) counts.set(r.outcome, (counts.get(r.outcome) || 0) + 1);
  return [...counts].map(([outcome, n]) => `${n} ${outcome.replace("_", " ")}`).join(", ");
}

export const CANCELLABLE = new Set(["new", "in_progress"]);
export const RETRYABLE = new Set(["failed", "cancelled"]);
