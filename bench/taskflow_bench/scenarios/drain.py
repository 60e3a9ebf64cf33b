"""drain: `--drain-tasks` tasks wait in PostgreSQL, work 0 s; how fast do they all finish?

The tasks (and their `new` history rows) are copied in before the service starts. The
rate is the number of tasks over the time from the first start to the last finish, by
PostgreSQL's clock, and every task must have exactly its three committed status changes.
"""

from __future__ import annotations

import math

from taskflow_bench.database import BenchDatabase
from taskflow_bench.harness.metrics import scrape, value
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context, mib
from taskflow_bench.server_cpu import seconds_of
from taskflow_bench.service import Deployment, ServiceConfig
from taskflow_bench.stats import rate

METRICS = (
    MetricSpec("tasks_per_s", "tasks/s, first start to last finish", "1/s"),
    MetricSpec("bad_histories", "tasks without their 3 status changes", ""),
    MetricSpec("peak_rss_mib", "peak RSS per instance", "MiB"),
    MetricSpec("finish_batch_ms", "mean finish batch (outcomes written)", "ms", 1),
    MetricSpec("pg_cpu_us_per_task", "PostgreSQL CPU per task", "µs", 0),
)
TARGETS = (Target("tasks_per_s", ">=", 10_000), Target("bad_histories", "<=", 0))
PGQUEUER_BEST = 6_800
BATCH_SECONDS = "taskflow_db_batch_seconds"


async def run(ctx: Context) -> ScenarioResult:
    """Run the drain scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "drain",
        {"tasks": o.drain_tasks, "processors": o.drain_processors, "instances": o.instances},
        METRICS,
        TARGETS,
        note=f"issue's reference: pgqueuer drains about {PGQUEUER_BEST:,} no-op jobs/s here",
    )
    for rep in range(1, o.repetitions + 1):
        async with ctx.database() as db:
            result.runs.append(
                await process_waiting(
                    ctx,
                    db,
                    ctx.service_config(db.url, processors=o.drain_processors),
                    o.drain_tasks,
                    f"drain {rep}/{o.repetitions}",
                )
            )
    return result


async def process_waiting(
    ctx: Context, db: BenchDatabase, config: ServiceConfig, tasks: int, label: str
) -> dict[str, float]:
    """Copy `tasks` waiting tasks in, then `process_all` of them."""
    with ctx.progress.bar(f"{label} inserting", tasks) as bar:
        await db.insert_waiting(tasks)
        bar.advance(tasks)
    return await process_all(ctx, db, config, tasks, label)


async def process_all(
    ctx: Context, db: BenchDatabase, config: ServiceConfig, tasks: int, label: str
) -> dict[str, float]:
    """Start the service, wait until `tasks` tasks are terminal, stop it: tasks/s from the
    first start to the last finish, tasks without their three status changes, peak RSS,
    the mean time of a batch of outcomes (`finish_tasks`, from the service's
    `taskflow_db_batch_seconds`: where a poor plan shows first), and PostgreSQL's CPU time per
    task from the service's readiness to the last finish (NaN when the server is remote)."""
    meter = await db.server_cpu()
    async with ctx.service(config) as service:
        server_cpu_s = seconds_of(meter)
        with ctx.progress.bar(f"{label} processing", tasks) as bar:

            def show(done: int) -> None:
                bar.set(done)

            await db.wait_terminal(tasks, timeout_for(tasks, config), show)
        server_cpu_s = seconds_of(meter) - server_cpu_s
        peak = service.peak_rss_kib()
        finish_ms = await mean_finish_batch_ms(service)
    window = await db.processing_window()
    return {
        "tasks_per_s": rate(window.tasks, window.seconds),
        "bad_histories": float(await db.incomplete_histories()),
        "peak_rss_mib": mib(peak),
        "finish_batch_ms": finish_ms,
        "pg_cpu_us_per_task": server_cpu_s * 1e6 / max(1, window.tasks),
    }


async def mean_finish_batch_ms(service: Deployment) -> float:
    """The mean time of the batches of outcomes (`finish_tasks`) the deployment's instances
    wrote so far, from their `taskflow_db_batch_seconds`; NaN before the first."""
    finish_s, finishes = 0.0, 0.0
    for instance in service.instances:
        async with instance.client() as http:
            samples = await scrape(http)
        finish_s += value(samples, f"{BATCH_SECONDS}_sum", operation="finish")
        finishes += value(samples, f"{BATCH_SECONDS}_count", operation="finish")
    return 1000 * finish_s / finishes if finishes else math.nan


def timeout_for(tasks: int, config: ServiceConfig) -> float:
    """A generous bound for processing `tasks`: 200 tasks/s, plus the work time, plus 60 s."""
    work = tasks / config.processors * config.work_s
    return 60.0 + tasks / 200 + work * 3
