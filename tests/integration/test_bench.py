"""`taskflow-bench` end to end at toy sizes: orchestration and output, not timings."""

from __future__ import annotations

import math
from dataclasses import replace

import orjson
import pytest

from taskflow_bench.cli import main
from taskflow_bench.options import BenchOptions
from taskflow_bench.report import Outcome, ScenarioResult
from taskflow_bench.runner import run_bench
from tests.conftest import ADMIN_URL, AMQP_URL

TINY = BenchOptions(
    repetitions=1,
    database_admin_url=ADMIN_URL,
    amqp_url=AMQP_URL,
    client="aiohttp",
    connections=2,
    duration_s=0.5,
    messages=20,
    drain_tasks=30,
    drain_processors=4,
    capacity_processors=5,
    capacity_seconds=1.0,
    backlog_small=5,
    backlog_large=20,
    backlog_seconds=0.5,
    cancel_running=5,
    cancel_count=3,
    stream_rate=30.0,
    stream_seconds=1.0,
    stream_clients=3,
    stream_tasks=30,
    store_tasks=30,
    processors=4,
    progress=False,
)


async def test_every_scenario_runs_at_toy_sizes() -> None:
    report = await run_bench(TINY)
    results = {s.name: s for s in report.scenarios}
    assert list(results) == [
        "http", "amqp", "amqp-e2e", "drain", "capacity", "capacity-amqp", "backlog", "cancel",
        "stream-latency", "stream-fanout", "store",
    ]  # fmt: skip
    for name in (
        "http",
        "amqp-e2e",
        "drain",
        "capacity",
        "capacity-amqp",
        "backlog",
        "cancel",
        "stream-latency",
        "stream-fanout",
        "store",
    ):
        assert results[name].outcome is Outcome.OK, results[name].note
        assert len(results[name].runs) == 1

    _check_http(results["http"].runs[0])

    e2e = results["amqp-e2e"].runs[0]
    assert e2e["tasks_per_s"] > 0
    assert e2e["celery_per_s"] > 0
    assert e2e["cpu_us_per_task"] >= 0  # 20 messages may take less than a clock tick
    assert e2e["bad_histories"] == 0

    drain = results["drain"].runs[0]
    assert drain["tasks_per_s"] > 0
    assert drain["bad_histories"] == 0
    assert drain["peak_rss_mib"] > 0

    for name in ("capacity", "capacity-amqp"):
        capacity = results[name].runs[0]
        assert results[name].params["tasks"] == 5
        assert capacity["ideal_per_s"] == 5
        assert capacity["bad_histories"] == 0
        assert 0 < capacity["efficiency"] <= 1.5
        assert capacity["peak_rss_mib"] > 0

    # PostgreSQL's CPU per task: a number, the server being local (not NaN); at toy sizes
    # it may be less than a clock tick (the meter has its own test).
    pg_cpu = [results[n].runs[0]["pg_cpu_us_per_task"] for n in ("amqp-e2e", "drain", "capacity")]
    pg_cpu += [results["store"].runs[0][f"pg_us_{size}"] for size in (10, 100, 1000)]
    assert all(us >= 0 for us in pg_cpu), pg_cpu

    backlog = results["backlog"].runs[0]
    assert backlog["small_rss_mib"] > 0
    assert backlog["large_rss_mib"] > 0
    assert backlog["growth"] == pytest.approx(backlog["large_rss_mib"] / backlog["small_rss_mib"])

    cancel = results["cancel"].runs[0]
    assert cancel["not_cancelled"] == 0
    assert cancel["max_ms"] >= cancel["p99_ms"] >= cancel["p50_ms"] >= 0

    latency = results["stream-latency"].runs[0]
    assert latency["missing"] == 0
    assert latency["max_ms"] >= latency["p99_ms"] >= latency["p50_ms"] > 0

    fanout = results["stream-fanout"].runs[0]
    assert fanout["short_streams"] == 0
    assert fanout["alone_tasks_per_s"] > 0
    assert fanout["streams_tasks_per_s"] > 0

    _check_amqp(results["amqp"])


def _check_http(http: dict[str, float]) -> None:
    assert http["creates_per_s"] > 0
    assert http["baseline_per_s"] > 0
    assert http["non_201"] == 0
    assert http["p99_ms"] >= http["p50_ms"] > 0
    # Both processes were started by the bench, so both CPU times are numbers (at toy
    # sizes they may be under a clock tick), and the ratio is theirs.
    assert http["cpu_us_per_create"] >= 0
    assert http["baseline_cpu_us"] >= 0
    if http["cpu_us_per_create"] > 0:
        assert http["cpu_ratio"] == pytest.approx(
            http["baseline_cpu_us"] / http["cpu_us_per_create"]
        )


def _check_amqp(amqp: ScenarioResult) -> None:
    assert amqp.outcome is Outcome.OK, amqp.note
    run = amqp.runs[0]
    assert run["baseline_per_s"] > 0
    assert run["baseline_cpu_us_per_message"] > 0  # the bench's own process
    if amqp.note is not None and amqp.note.startswith("consumer not available"):
        assert math.isnan(run["tasks_per_s"])
        assert math.isnan(run["ratio"])
        assert math.isnan(run["cpu_us_per_message"])
        assert math.isnan(run["intake_per_s"])
    else:
        assert run["tasks_per_s"] > 0
        assert run["cpu_us_per_message"] >= 0
        # The second run, with processing held off, measured its own rate.
        assert run["intake_per_s"] > 0
        assert run["intake_ratio"] == pytest.approx(run["intake_per_s"] / run["baseline_per_s"])


def test_command_prints_json_with_the_median_of_repetitions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "drain",
            "--repetitions=2",
            "--drain-tasks=20",
            "--drain-processors=4",
            "--json",
            "--no-progress",
            f"--database-admin-url={ADMIN_URL}",
        ]
    )
    assert code == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["repetitions"] == 2
    (drain,) = data["scenarios"]
    assert drain["scenario"] == "drain"
    assert drain["outcome"] == "ok"
    assert len(drain["runs"]) == 2
    assert drain["summary"]["bad_histories"]["max"] == 0
    rates = sorted(run["tasks_per_s"] for run in drain["runs"])
    assert drain["summary"]["tasks_per_s"]["median"] == pytest.approx(sum(rates) / 2)


async def test_a_service_that_cannot_start_fails_its_scenario_only() -> None:
    broken = BenchOptions(
        scenarios=("drain", "backlog"),
        repetitions=1,
        database_admin_url="postgresql://postgres@127.0.0.1:1/postgres",
        progress=False,
    )
    report = await run_bench(broken)
    assert [s.outcome for s in report.scenarios] == [Outcome.FAILED, Outcome.FAILED]
    assert all(s.note for s in report.scenarios)


async def test_scale_scenarios_run_at_toy_sizes() -> None:
    options = replace(
        TINY,
        scenarios=("large-table", "retention"),
        large_tasks=300,
        large_drain_tasks=40,
        large_seconds=0.5,
        retention_tasks=300,
        retention_drain_tasks=40,
    )
    report = await run_bench(options)
    large, retention = report.scenarios
    assert (large.name, retention.name) == ("large-table", "retention")
    assert large.outcome is Outcome.OK, large.note
    assert retention.outcome is Outcome.OK, retention.note

    (run,) = large.runs
    assert run["unexpected"] == 0
    for phase in ("empty", "large"):
        for key in ("drain", "creates", "get", "list_failed"):
            assert run[f"{phase}_{key}_per_s"] > 0
        assert run[f"{phase}_get_p99_ms"] > 0
        assert run[f"{phase}_finish_batch_ms"] > 0  # the drain's outcomes, from /metrics
    for key in ("drain", "creates", "get", "list_failed"):
        assert run[f"{key}_ratio"] == pytest.approx(
            run[f"large_{key}_per_s"] / run[f"empty_{key}_per_s"]
        )
    # GET /stats and ?q= are measured when the service has them, and said absent if not.
    for key, endpoint in (("stats", "GET /stats"), ("search", "GET /tasks?q=")):
        if f"empty_{key}_p99_ms" in run:
            assert run[f"large_{key}_p99_ms"] > 0
        else:
            assert large.note is not None
            assert endpoint in large.note

    (run,) = retention.runs
    assert run["alone_drain_per_s"] > 0
    assert run["pruning_drain_per_s"] > 0
    assert run["drain_ratio"] == pytest.approx(
        run["pruning_drain_per_s"] / run["alone_drain_per_s"]
    )
    assert run["stored_left"] == 0
    assert 0 <= run["left_at_drain_end"] <= 300


def test_scale_scenarios_run_only_when_named() -> None:
    assert "large-table" not in BenchOptions().scenarios
    assert "retention" not in BenchOptions().scenarios
