"""http: concurrent `POST /tasks` against taskflow and, alternately, the bare handler.

Each repetition runs the baseline and then taskflow for `--duration` seconds with the
same client and `--connections`; the ratio is taskflow's creates/s over the baseline's
responses/s in that repetition. Before the next baseline run, taskflow finishes
processing what it accepted, so it does not steal CPU from the baseline.

Beside the rates, the CPU time per request of each process: the bare handler's while
it is loaded, and taskflow's (all instances) from the start of its load until it has
processed every task it accepted, so each create carries its claim, work and finish.
Their ratio, the bare handler's cost over taskflow's, says how cheap a create is without
depending on how busy the machine's cores are (NaN for a service the bench did not start).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TypeVar

from taskflow_bench.database import BenchDatabase
from taskflow_bench.load import LoadResult, run_load
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.service import baseline_server
from taskflow_bench.stats import per_unit_us, rate, ratio

WARMUP_S = 1.0
SETTLE_TIMEOUT_S = 300.0

METRICS = (
    MetricSpec("creates_per_s", "taskflow creates/s", "1/s"),
    MetricSpec("baseline_per_s", "bare handler responses/s", "1/s"),
    MetricSpec("ratio", "taskflow / bare handler", "", 2),
    MetricSpec("p50_ms", "taskflow p50", "ms", 1),
    MetricSpec("p99_ms", "taskflow p99", "ms", 1),
    MetricSpec("baseline_p99_ms", "bare handler p99", "ms", 1),
    MetricSpec("non_201", "taskflow non-201 responses", ""),
    MetricSpec("errors", "taskflow connection errors", ""),
    MetricSpec("cpu_us_per_create", "taskflow service CPU per create, processed", "µs", 0),
    MetricSpec("baseline_cpu_us", "bare handler CPU per response", "µs", 0),
    MetricSpec("cpu_ratio", "bare handler CPU / taskflow CPU per request", "", 2),
)
# Issue 16's targets (the first issue's 0.7 and 25 ms assumed PostgreSQL on other cores).
TARGETS = (Target("ratio", ">=", 0.35), Target("p99_ms", "<=", 20.0))


T = TypeVar("T")


def measure(
    tf: LoadResult, base: LoadResult, tf_cpu_s: float = math.nan, base_cpu_s: float = math.nan
) -> dict[str, float]:
    """The metrics of one repetition from its two load runs and the CPU time each took."""
    creates = rate(tf.requests - tf.unexpected, tf.seconds)
    baseline = rate(base.requests - base.unexpected, base.seconds)
    tf_cpu_us = per_unit_us(tf_cpu_s, tf.requests - tf.unexpected)
    base_cpu_us = per_unit_us(base_cpu_s, base.requests - base.unexpected)
    return {
        "creates_per_s": creates,
        "baseline_per_s": baseline,
        "ratio": ratio(creates, baseline),
        "p50_ms": tf.latency_ms(50),
        "p99_ms": tf.latency_ms(99),
        "baseline_p99_ms": base.latency_ms(99),
        "non_201": float(tf.unexpected),
        "errors": float(tf.errors),
        "cpu_us_per_create": tf_cpu_us,
        "baseline_cpu_us": base_cpu_us,
        "cpu_ratio": ratio(base_cpu_us, tf_cpu_us),
    }


async def run(ctx: Context) -> ScenarioResult:
    """Run the http scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "http",
        {
            "client": ctx.client,
            "connections": o.connections,
            "duration_s": o.duration_s,
            "instances": 1 if o.url else o.instances,
            "processors": o.processors,
            "target": o.url or "started by the bench",
        },
        METRICS,
        TARGETS,
    )
    async with AsyncExitStack() as stack:
        baseline = await stack.enter_async_context(baseline_server())
        db: BenchDatabase | None = None
        service_cpu: Callable[[], float] = _unknown_cpu  # a service the bench did not start
        if o.url:
            urls = [o.url.rstrip("/")]
        else:
            db = await stack.enter_async_context(ctx.database())
            service = await stack.enter_async_context(ctx.service(ctx.service_config(db.url)))
            urls = service.urls
            service_cpu = service.cpu_seconds
        warmup = min(WARMUP_S, o.duration_s)
        await _load(ctx, [baseline.url], warmup)
        await _load(ctx, urls, warmup)
        await _settle(ctx, db)
        for rep in range(1, o.repetitions + 1):
            label = f"http {rep}/{o.repetitions}"
            async with ctx.progress.timed(f"{label} bare handler", o.duration_s):
                base, base_cpu_s = await _costing(
                    baseline.cpu_seconds, _load(ctx, [baseline.url], o.duration_s)
                )
            async with ctx.progress.timed(f"{label} taskflow", o.duration_s):
                tf, tf_cpu_s = await _costing(service_cpu, _load(ctx, urls, o.duration_s))
            _, settle_cpu_s = await _costing(service_cpu, _settle(ctx, db))
            result.runs.append(measure(tf, base, tf_cpu_s + settle_cpu_s, base_cpu_s))
    return result


def _unknown_cpu() -> float:
    return math.nan


async def _costing(cpu_seconds: Callable[[], float], work: Awaitable[T]) -> tuple[T, float]:
    """What `work` returns, and the CPU seconds that `cpu_seconds` counted meanwhile."""
    before = cpu_seconds()
    done = await work
    return done, cpu_seconds() - before


async def _load(ctx: Context, urls: Sequence[str], seconds: float) -> LoadResult:
    return await run_load(ctx.client, urls, connections=ctx.options.connections, duration_s=seconds)


async def _settle(ctx: Context, db: BenchDatabase | None) -> None:
    """Wait until taskflow has processed every task it accepted."""
    if db is None:
        return
    total, terminal = await db.progress()
    with ctx.progress.bar("http: processing the accepted tasks", total) as bar:

        def show(done: int) -> None:
            bar.set(done)

        bar.advance(terminal)
        await db.wait_terminal(total, SETTLE_TIMEOUT_S, show)
