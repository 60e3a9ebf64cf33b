// The dashboard's entry point: hash routes, the live stream, notices.
//
//   #/overview            counts, rates, instances
//   #/tasks?status=&q=    the task list
//   #/tasks/<id>          one task

import { TaskDetail } from "./detail.js";
import { byId } from "./dom.js";
import { LiveEvents } from "./events.js";
import { Overview } from "./overview.js";
import { TaskList } from "./tasks.js";

let noticeTimer = null;

/** Say something to the operator in the notice area (announced to screen readers). */
function notify(text, kind = "info") {
  const notice = byId("notice");
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.hidden = true;
  }, kind === "error" ? 10000 : 6000);
}

const overview = new Overview({ onError: (text) => notify(text, "error") });
const list = new TaskList({ notify });
const detail = new TaskDetail({ notify });

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  live: "Live",
  disconnected: "Disconnected",
};

function setConnection(state, detailText) {
  const node = byId("connection");
  node.dataset.state = state;
  node.textContent = CONNECTION_TEXT[state] + (state === "disconnected" && detailText ? `: ${detailText}` : "");
  node.title = detailText || "";
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  let view = "overview";
  if (parts[0] === "tasks" && parts[1]) view = "task";
  else if (parts[0] === "tasks") view = "tasks";

  for (const name of ["overview", "tasks", "task"]) {
    byId(`view-${name}`).hidden = name !== view;
  }
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    const current = link.dataset.view === view || (view === "task" && link.dataset.view === "tasks");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "overview") overview.show();
  else overview.hide();
  if (view === "tasks") list.show(params);
  else list.hide();
  if (view === "task") detail.show(decodeURIComponent(parts[1]));
  else detail.hide();
  document.title = `taskflow · ${view === "task" ? "task" : view}`;
}

window.addEventListener("hashchange", () => {
  route();
  byId("main").focus({ preventScroll: true });
});

const live = new LiveEvents({
  onEvent(change) {
    list.changed(change);
    detail.changed(change);
    overview.changed();
  },
  onState: setConnection,
  onResume(replayed) {
    if (!replayed) route(); // nothing to resume from: read the view again
  },
});

route();
live.start();
