"""capacity: many processors with 1 s of work each; tasks/s against the ideal, and memory.

`--capacity-processors` processors per instance and `processors * --capacity-seconds`
tasks: ideally they finish in `--capacity-seconds`, at `processors` tasks/s per
instance. The efficiency is the measured rate (the tasks over the time from the first
`started_at` to the last `finished_at`, PostgreSQL's clock) over that ideal.

`capacity` copies the tasks into PostgreSQL before the service starts; `capacity-amqp`
has them arrive as RabbitMQ messages on the service's intake queue (see `run_amqp`).
"""

from __future__ import annotations

import aio_pika

from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.amqp import messages_waiting
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.drain import process_all, process_waiting
from taskflow_bench.stats import ratio

WORK_S = 1.0

METRICS = (
    MetricSpec("tasks_per_s", "tasks/s", "1/s"),
    MetricSpec("ideal_per_s", "ideal tasks/s (processors / 1 s)", "1/s"),
    MetricSpec("efficiency", "tasks/s / ideal", "", 3),
    MetricSpec("bad_histories", "tasks without their 3 status changes", ""),
    MetricSpec("peak_rss_mib", "peak RSS per instance", "MiB"),
    MetricSpec("finish_batch_ms", "mean finish batch (outcomes written)", "ms", 1),
    MetricSpec("pg_cpu_us_per_task", "PostgreSQL CPU per task", "µs", 0),
)
TARGETS = (
    Target("efficiency", ">=", 0.9),
    Target("peak_rss_mib", "<=", 300),
    Target("bad_histories", "<=", 0),
)


async def run(ctx: Context) -> ScenarioResult:
    """Run the capacity scenario `--repetitions` times: the tasks wait in PostgreSQL."""
    o = ctx.options
    result = _result(ctx, "capacity")
    for rep in range(1, o.repetitions + 1):
        async with ctx.database() as db:
            config = ctx.service_config(db.url, processors=o.capacity_processors, work_s=WORK_S)
            run = await process_waiting(
                ctx, db, config, _tasks(ctx), f"capacity {rep}/{o.repetitions}"
            )
        result.runs.append(_with_efficiency(ctx, run))
    return result


async def run_amqp(ctx: Context) -> ScenarioResult:
    """Run capacity-amqp `--repetitions` times: the tasks arrive as RabbitMQ messages.

    Every task message (the `POST /tasks` body, as `amqp` and `amqp-e2e` publish it) is
    published with confirms to the service's intake queue **before the service starts**
    and waits there, as capacity's rows wait in PostgreSQL; then the service starts and
    its consumer takes them. The window is capacity's (first start to last finish), so the
    two efficiencies compare directly, and it holds the whole intake: consuming,
    validating, inserting and acking every message happens while the processors work.
    A queue that is full from the first moment is the hardest arrival for the intake (all
    at once, as fast as the consumer takes them); messages published at a steady rate
    during the run would measure the publisher's pacing rather than the service. Unlike
    capacity's copy, nothing is analyzed before the run (the tasks arrive during it): the
    planner sees the statistics of the empty table, as a fresh deployment would.
    """
    o = ctx.options
    result = _result(ctx, "capacity-amqp")
    tasks = _tasks(ctx)
    connection = await aio_pika.connect_robust(o.amqp_url, timeout=10)
    async with connection:
        for rep in range(1, o.repetitions + 1):
            label = f"capacity-amqp {rep}/{o.repetitions}"
            async with ctx.database() as db:
                config = ctx.service_config(db.url, processors=o.capacity_processors, work_s=WORK_S)
                async with messages_waiting(ctx, connection, config, tasks, label):
                    run = await process_all(ctx, db, config, tasks, label)
            result.runs.append(_with_efficiency(ctx, run))
    return result


def _result(ctx: Context, name: str) -> ScenarioResult:
    o = ctx.options
    parameters: dict[str, object] = {
        "processors": o.capacity_processors,
        "instances": o.instances,
        "work_s": WORK_S,
        "tasks": _tasks(ctx),
    }
    return ScenarioResult(name, parameters, METRICS, TARGETS)


def _tasks(ctx: Context) -> int:
    o = ctx.options
    return round(o.capacity_processors * o.instances * o.capacity_seconds)


def _with_efficiency(ctx: Context, run: dict[str, float]) -> dict[str, float]:
    ideal = ctx.options.capacity_processors * ctx.options.instances / WORK_S
    return {**run, "ideal_per_s": ideal, "efficiency": ratio(run["tasks_per_s"], ideal)}
