"""The bench's report: the table a person reads and the JSON a script reads."""

from __future__ import annotations

import math

import orjson

from taskflow_bench.report import MetricSpec, Outcome, Report, ScenarioResult, Target, render_table

SPECS = (MetricSpec("rate", "creates/s", "1/s"), MetricSpec("p99", "p99", "ms", 1))


def _report() -> Report:
    http = ScenarioResult(
        "http",
        {"connections": 64},
        SPECS,
        (Target("rate", ">=", 100), Target("p99", "<=", 25)),
        runs=[
            {"rate": 90.0, "p99": 20.0},
            {"rate": 120.0, "p99": 30.0},
            {"rate": 110.0, "p99": 10.0},
        ],
    )
    amqp = ScenarioResult(
        "amqp",
        {},
        (),
        outcome=Outcome.SKIPPED,
        note="consumer not available (amqp state: disabled)",
    )
    environment = {
        "cpus": 2,
        "load_before": "1.00",
        "client": "wrk",
        "python": "3.11.7",
        "python_executable": "/usr/bin/python3.11",
    }
    return Report(environment, 3, [http, amqp])


def test_target_compares_the_median() -> None:
    http = _report().scenarios[0]
    summary = http.summary()
    assert summary["rate"].median == 110
    assert Target("rate", ">=", 100).met(summary["rate"]) is True
    assert Target("p99", "<=", 15).met(summary["p99"]) is False
    assert Target("missing", "<=", 1).met(summary.get("missing")) is None


def test_table_has_a_row_per_metric_with_median_range_and_verdict() -> None:
    table = render_table(_report())
    lines = table.splitlines()
    assert lines[0].split() == ["scenario", "metric", "median", "min..max", "target", "met"]
    rate_row = next(line for line in lines if "creates/s" in line)
    assert rate_row.split()[-5:] == ["110", "90..120", ">=", "100", "yes"]
    p99_row = next(line for line in lines if "p99 (ms)" in line)
    assert p99_row.split()[-5:] == ["20.0", "10.0..30.0", "<=", "25", "yes"]
    assert "median of 3 repetitions" in table
    machine = next(line for line in lines if line.startswith("Machine: "))
    assert "python_executable /usr/bin/python3.11" in machine, "which build ran"
    assert "consumer not available" in table
    assert any(line.startswith("amqp") and "(skipped)" in line for line in lines)


def test_json_has_runs_summaries_targets_and_no_nan() -> None:
    report = _report()
    report.scenarios[0].runs.append({"rate": math.nan, "p99": 5.0})
    data = orjson.loads(report.to_json())
    assert data["statistic"].startswith("median of 3")
    http, amqp = data["scenarios"]
    assert http["runs"][-1]["rate"] is None
    assert http["summary"]["rate"] == {"median": 110.0, "min": 90.0, "max": 120.0, "runs": 3}
    assert http["units"] == {"rate": "1/s", "p99": "ms"}
    assert {t["metric"]: t["met"] for t in http["targets"]} == {"rate": True, "p99": True}
    assert amqp["outcome"] == "skipped"
    assert amqp["note"] == "consumer not available (amqp state: disabled)"
