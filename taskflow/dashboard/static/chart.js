// A small SVG line chart: one line per series, a y axis with its maximum, time ticks.

const SVG = "http://www.w3.org/2000/svg";
const PAD = { top: 12, right: 12, bottom: 26, left: 44 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function formatRate(value) {
  if (Number.isInteger(value)) return String(value);
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2).replace(/\.?0+$/, "") || "0";
}

/** Draw `points` ([{at, <series>: number}]) into `container` as lines for `series`
 * ([{key, label}]), with a legend below. */
export function drawChart(container, points, series) {
  // Drawn at the container's own size, so that text keeps its size on a phone too.
  const WIDTH = Math.max(280, Math.round(container.clientWidth || 1000));
  const HEIGHT = WIDTH < 600 ? 200 : 240;
  const innerW = WIDTH - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const max = niceMax(Math.max(0, ...points.flatMap((p) => series.map((s) => p[s.key]))));
  const times = points.map((p) => new Date(p.at).getTime());
  const t0 = times.length ? times[0] : Date.now();
  const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0 || 1)) * innerW;
  const y = (v) => PAD.top + innerH - (v / max) * innerH;

  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart-svg",
    role: "img",
    "aria-label": "Status changes per second over the last 15 minutes",
  });
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    root.append(
      svg("line", {
        x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: "grid",
      }),
      svg("text", { x: PAD.left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" },
        formatRate(value)),
    );
  }
  if (times.length > 1) {
    const ticks = WIDTH < 600 ? 2 : 4;
    for (let i = 0; i <= ticks; i += 1) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      const label = new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
      const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
      root.append(svg("text", { x: x(t), y: HEIGHT - 6, class: "axis", "text-anchor": anchor }, label));
    }
  }
  for (const s of series) {
    const coords = points.map((p, i) => `${x(times[i]).toFixed(1)},${y(p[s.key]).toFixed(1)}`);
    if (coords.length === 1) coords.push(`${(PAD.left + innerW).toFixed(1)},${coords[0].split(",")[1]}`);
    root.append(svg("polyline", { points: coords.join(" "), class: `line line-${s.key}` }));
  }
  if (!points.length) {
    root.append(svg("text", {
      x: PAD.left + innerW / 2, y: PAD.top + innerH / 2, class: "axis", "text-anchor": "middle",
    }, "No data yet"));
  }

  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch swatch-${s.key}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, s.label);
    legend.append(item);
  }
  container.replaceChildren(root, legend);
}

export { formatRate };
