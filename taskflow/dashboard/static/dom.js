// Small DOM helpers. Text always goes in through textContent, never as HTML.

/** Create an element: `el("td", {class: "x", dataset: {id}}, "text", child)`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The element with this id (it must exist). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing`);
  return node;
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
}

/** A timestamp as local time, precise to the second. */
export function formatTime(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  return when.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** A timestamp, short: the time alone when it is today. */
export function formatShort(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  if (when.toDateString() === new Date().toDateString()) {
    return when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  return formatTime(iso);
}

/** How long ago, in words ("5 s ago"). */
export function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** A status as people read it. */
export function statusLabel(status) {
  return status ? status.replace("_", " ") : "";
}

/** A status badge. */
export function badge(status) {
  return el("span", { class: `badge status-${status}`, text: statusLabel(status) });
}

/** Call `fn` at most once per `ms`, with the latest arguments, trailing. */
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  return () => {
    if (timer) {
      pending = true;
      return;
    }
    fn();
    timer = setTimeout(function release() {
      timer = null;
      if (pending) {
        pending = false;
        fn();
        timer = setTimeout(release, ms);
      }
    }, ms);
  };
}
