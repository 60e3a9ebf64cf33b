"""retention: how much a retention run that deletes `--retention-tasks` (1,000,000) stored
tasks slows a concurrent drain.

One database stores the tasks, finished between two hours and one hour ago. Then, on it,
`--retention-drain-tasks` (20,000) waiting tasks are drained twice by a fresh service with
`--drain-processors`: first with `TASKFLOW_RETENTION=0` (no pruner: the drain alone), then
with `TASKFLOW_RETENTION=60s`, so that the service's own pruner starts deleting every
stored task at start-up, while the drain runs. Reported: both drain rates and their ratio,
how many stored tasks were still left when the second drain ended (if none, the pruner
was done before the drain and the ratio says little), and the pruner's deletion rate,
read from `taskflow_pruned_tasks_total` of every instance until the stored tasks are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence

from taskflow_bench.database import BenchDatabase
from taskflow_bench.harness import metrics
from taskflow_bench.harness.service import Service
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.scale import Drain, store
from taskflow_bench.stats import rate, ratio

RETENTION = "60s"  # the stored tasks finished an hour ago and more
RETENTION_OFF = "0"
PRUNED = "taskflow_pruned_tasks_total"
SCRAPE_EVERY_S = 0.5
DRAIN_SLOWDOWN_TARGET = 0.8  # "slows a concurrent drain by at most 20 %"

METRICS = (
    MetricSpec("store_s", "storing the tasks: COPY + VACUUM ANALYZE", "s", 1),
    MetricSpec("alone_drain_per_s", "drain alone", "1/s"),
    MetricSpec("pruning_drain_per_s", "drain while the pruner deletes", "1/s"),
    MetricSpec("drain_ratio", "drain with pruner / alone", "", 2),
    MetricSpec("left_at_drain_end", "stored tasks not yet deleted when the drain ended", ""),
    MetricSpec("pruned_per_s", "pruner's deletions", "1/s"),
    MetricSpec("prune_s", "pruner's time to delete them all", "s", 1),
    MetricSpec("stored_left", "stored tasks left at the end", ""),
)
TARGETS = (
    Target("drain_ratio", ">=", DRAIN_SLOWDOWN_TARGET),
    Target("stored_left", "<=", 0),
)


async def run(ctx: Context) -> ScenarioResult:
    """Run the retention scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "retention",
        {
            "stored": o.retention_tasks,
            "drained": o.retention_drain_tasks,
            "processors": o.drain_processors,
            "instances": o.instances,
            "retention": RETENTION,
        },
        METRICS,
        TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        label = f"retention {rep}/{o.repetitions}"
        async with ctx.database() as db:
            result.runs.append(await _one_run(ctx, db, label))
    return result


async def _one_run(ctx: Context, db: BenchDatabase, label: str) -> dict[str, float]:
    o = ctx.options
    out = {"store_s": await store(ctx, db, o.retention_tasks, label)}
    stored_before = await db.clock()

    alone = Drain(ctx, db, o.retention_drain_tasks, f"{label} drain alone")
    await alone.prepare()
    config = ctx.service_config(
        db.url,
        processors=o.drain_processors,
        extra_env={"TASKFLOW_RETENTION": RETENTION_OFF},
    )
    async with ctx.service(config):
        out["alone_drain_per_s"] = await alone.measure(config)

    pruning = Drain(ctx, db, o.retention_drain_tasks, f"{label} drain while pruning")
    await pruning.prepare()
    config = ctx.service_config(
        db.url,
        processors=o.drain_processors,
        extra_env={"TASKFLOW_RETENTION": RETENTION},
    )
    async with ctx.service(config) as service:
        watch = PrunedWatch(service.instances)
        watcher = asyncio.create_task(watch.run(), name="bench-pruned-watch")
        try:
            out["pruning_drain_per_s"] = await pruning.measure(config)
            out["left_at_drain_end"] = float(await db.finished_before(stored_before))
            with ctx.progress.bar(f"{label}: pruning", o.retention_tasks) as bar:
                async with asyncio.timeout(prune_timeout(o.retention_tasks)):
                    while (left := await db.finished_before(stored_before)) > 0:
                        bar.set(o.retention_tasks - left)
                        await asyncio.sleep(1.0)
                bar.set(o.retention_tasks)
            await watch.scrape()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    out["drain_ratio"] = ratio(out["pruning_drain_per_s"], out["alone_drain_per_s"])
    out["prune_s"], out["pruned_per_s"] = watch.pace(o.retention_tasks)
    out["stored_left"] = float(await db.finished_before(stored_before))
    return out


def prune_timeout(tasks: int) -> float:
    """A generous bound for deleting `tasks`: 500 tasks/s, plus 120 s."""
    return 120.0 + tasks / 500


class PrunedWatch:
    """`taskflow_pruned_tasks_total` of every instance, summed, read every half second."""

    def __init__(self, instances: Sequence[Service]) -> None:
        self._instances = instances
        self._started = time.monotonic()
        self.samples: list[tuple[float, float]] = []  # (seconds since start, pruned)

    async def scrape(self) -> None:
        """Read the counter of every instance once."""
        found = await asyncio.gather(*(i.metrics() for i in self._instances))
        pruned = sum(metrics.value(samples, PRUNED) for samples in found)
        self.samples.append((time.monotonic() - self._started, pruned))

    async def run(self) -> None:
        """Scrape until cancelled."""
        while True:
            await self.scrape()
            await asyncio.sleep(SCRAPE_EVERY_S)

    def pace(self, count: int) -> tuple[float, float]:
        """Seconds from the service being ready (the pruner starts with it, just before)
        to the first reading of at least `count` deletions, and the deletions per second
        between the first reading and that one; NaNs if no reading reached `count`."""
        if not self.samples:
            return math.nan, math.nan
        first_at, first = self.samples[0]
        for at, pruned in self.samples:
            if pruned >= count:
                return at, rate(pruned - first, at - first_at)
        return math.nan, math.nan
