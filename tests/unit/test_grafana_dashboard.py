"""The Grafana dashboard of deploy/ is importable and queries only metrics taskflow exports.

Every panel's PromQL is parsed for the metric names it selects; each must be a sample
name of the service's registry (a counter's `_total`, a histogram's `_bucket`, `_sum`
and `_count`), so renaming a metric without updating the dashboard fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskflow.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "taskflow.json"

# Series that Prometheus itself writes for each scrape target, not the service.
PROMETHEUS_SERIES = {"up"}

PROMQL_WORDS = {
    # aggregations and their modifiers
    *("sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile"),
    *("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"),
    *("and", "or", "unless", "inf", "nan"),
}


def exported_names() -> set[str]:
    """Every sample name the service's metrics registry can expose."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        if text[: match.start()].rstrip().endswith("$"):
            continue  # a Grafana variable such as $__rate_interval (already removed) or $instance
        names.add(word)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queried_panels() -> list[dict[str, Any]]:
    return [p for p in panels() if p["type"] != "row"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum(up{job="taskflow"})', {"up"}),
        (
            "histogram_quantile(0.99, sum by (le, route) "
            '(rate(taskflow_http_request_duration_seconds_bucket{instance=~"$instance"}'
            "[$__rate_interval])))",
            {"taskflow_http_request_duration_seconds_bucket"},
        ),
        (
            "max by (queue) (taskflow_queue_depth / taskflow_queue_capacity)",
            {"taskflow_queue_depth", "taskflow_queue_capacity"},
        ),
        (
            'taskflow_tasks{status="new"} > 10 and on (instance) taskflow_db_up',
            {"taskflow_tasks", "taskflow_db_up"},
        ),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    data = dashboard()
    assert data["uid"]
    assert data["title"]
    assert isinstance(data["schemaVersion"], int)
    assert "id" not in data or data["id"] is None  # an id would clash on import
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in queried_panels():
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]


def test_every_panel_queries_metrics_that_the_service_exports() -> None:
    exported = exported_names() | PROMETHEUS_SERIES
    queried: set[str] = set()
    for panel in queried_panels():
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - exported
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}"
            queried |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":  # label_values(SELECTOR, LABEL)
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert selector is not None, variable["definition"]
            assert metric_names(selector.group(1)) <= exported


def test_the_dashboard_shows_what_operators_need() -> None:
    queried = {
        name for p in queried_panels() for t in p["targets"] for name in metric_names(t["expr"])
    }
    for needed in (
        "taskflow_status_changes_total",  # throughput
        "taskflow_processing_seconds_bucket",  # latency histograms
        "taskflow_http_request_duration_seconds_bucket",
        "taskflow_queue_depth",  # queue depths
        "taskflow_processors_busy",  # processors busy
        "taskflow_lease_recoveries_total",  # lease recoveries
        "taskflow_fenced_writes_total",  # fenced writes
        "taskflow_amqp_dead_lettered_total",  # dead letters
        "taskflow_db_up",
        "taskflow_pruned_tasks_total",  # retention
    ):
        assert needed in queried, needed


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{prometheus_port}"

    providers = yaml.safe_load((provisioning / "dashboards" / "taskflow.yml").read_text())
    (provider,) = providers["providers"]
    dashboards_dir = ROOT / mounts[provider["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).read_text() == DASHBOARD.read_text()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
