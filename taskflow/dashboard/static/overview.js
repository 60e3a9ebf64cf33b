// The Overview: counts per status, rates and their 15-minute chart, the instances.

import { api } from "./api.js";
import { drawChart, formatRate } from "./chart.js";
import { ago, byId, el, fill, formatTime, statusLabel, throttle } from "./dom.js";

export const STATUSES = ["new", "in_progress", "completed", "failed", "cancelled"];
const SERIES = [
  { key: "created", label: "created" },
  { key: "completed", label: "completed" },
  { key: "failed", label: "failed" },
  { key: "cancelled", label: "cancelled" },
];
const STATS_EVERY_MS = 5000;
const CHART_EVERY_MS = 15000;

export class Overview {
  constructor({ onError }) {
    this.onError = onError;
    this.visible = false;
    this.statsTimer = null;
    this.chartTimer = null;
    this.refreshSoon = throttle(() => this.refreshStats(), 1000);
    this.series = null;
    window.addEventListener(
      "resize",
      throttle(() => {
        if (this.visible && this.series) drawChart(byId("chart"), this.series, SERIES);
      }, 250),
    );
  }

  show() {
    this.visible = true;
    this.refreshStats();
    this.refreshChart();
  }

  hide() {
    this.visible = false;
    clearTimeout(this.statsTimer);
    clearTimeout(this.chartTimer);
  }

  /** A status changed somewhere: the counts are worth reading again. */
  changed() {
    if (this.visible) this.refreshSoon();
  }

  async refreshStats() {
    clearTimeout(this.statsTimer);
    try {
      this.render(await api("/stats"));
    } catch (error) {
      this.onError(`Could not read /stats: ${error.message}`);
    }
    if (this.visible) this.statsTimer = setTimeout(() => this.refreshStats(), STATS_EVERY_MS);
  }

  async refreshChart() {
    clearTimeout(this.chartTimer);
    try {
      this.series = (await api("/stats/rates")).items;
      drawChart(byId("chart"), this.series, SERIES);
    } catch (error) {
      this.onError(`Could not read /stats/rates: ${error.message}`);
    }
    if (this.visible) this.chartTimer = setTimeout(() => this.refreshChart(), CHART_EVERY_MS);
  }

  render(stats) {
    fill(
      byId("counts"),
      ...STATUSES.map((status) =>
        el(
          "a",
          { class: `card status-${status}`, href: `#/tasks?status=${status}`, dataset: { status } },
          el("span", { class: "card-label", text: statusLabel(status) }),
          el("span", { class: "card-value", text: (stats.counts[status] ?? 0).toLocaleString() }),
        ),
      ),
    );
    fill(
      byId("rates-now"),
      `Last minute: ${SERIES.map((s) => `${formatRate(stats.rates[s.key] ?? 0)} ${s.label}`).join(", ")} per second`,
    );
    const instances = stats.instances;
    const queued = instances.reduce((sum, i) => sum + i.queue_depth, 0);
    const busy = instances.reduce((sum, i) => sum + i.busy, 0);
    const total = instances.reduce((sum, i) => sum + i.processors, 0);
    fill(
      byId("queue-total"),
      `${instances.length} live · ${busy} of ${total} processors busy · ${queued} in intake queues`,
    );
    fill(
      byId("instances"),
      ...instances.map((i) =>
        el(
          "tr",
          {},
          el("td", { class: "mono", text: i.id }),
          el(
            "td",
            {},
            el("meter", { min: 0, max: Math.max(i.processors, 1), value: i.busy, "aria-label": `${i.busy} of ${i.processors} busy` }),
            ` ${i.busy} / ${i.processors}`,
          ),
          el("td", { text: `${i.queue_depth} / ${i.queue_capacity}` }),
          el("td", { class: "wide", text: formatTime(i.started_at) }),
          el("td", { class: "wide", text: ago(i.last_seen_at) }),
        ),
      ),
    );
    if (!instances.length) {
      fill(byId("instances"), el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No live instance." })));
    }
  }
}
