"""backlog: resident memory with a large backlog waiting, against a small one.

The service starts with `--backlog-small` and then (on a fresh database)
`--backlog-large` tasks waiting, `--processors` processors and 1 s of work, so the
backlog stays for the whole run. After `--backlog-seconds` the peak resident set
(VmHWM) is read for each, and their ratio reported.
"""

from __future__ import annotations

import asyncio

from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context, mib
from taskflow_bench.stats import ratio

WORK_S = 1.0

METRICS = (
    MetricSpec("small_rss_mib", "peak RSS, small backlog", "MiB", 1),
    MetricSpec("large_rss_mib", "peak RSS, large backlog", "MiB", 1),
    MetricSpec("growth", "large / small", "", 3),
)
TARGETS = (Target("large_rss_mib", "<=", 150), Target("growth", "<=", 1.1))


async def run(ctx: Context) -> ScenarioResult:
    """Run the backlog scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "backlog",
        {
            "small": o.backlog_small,
            "large": o.backlog_large,
            "processors": o.processors,
            "instances": o.instances,
            "work_s": WORK_S,
            "observed_s": o.backlog_seconds,
        },
        METRICS,
        TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        small = await peak_rss_with_backlog(ctx, o.backlog_small, f"backlog {rep} small")
        large = await peak_rss_with_backlog(ctx, o.backlog_large, f"backlog {rep} large")
        result.runs.append(
            {"small_rss_mib": small, "large_rss_mib": large, "growth": ratio(large, small)}
        )
    return result


async def peak_rss_with_backlog(ctx: Context, tasks: int, label: str) -> float:
    """Peak RSS (MiB) of the service over `--backlog-seconds` with `tasks` waiting."""
    async with ctx.database() as db:
        with ctx.progress.bar(f"{label}: inserting", tasks) as bar:
            await db.insert_waiting(tasks)
            bar.advance(tasks)
        config = ctx.service_config(db.url, work_s=WORK_S)
        async with ctx.service(config) as service:
            seconds = ctx.options.backlog_seconds
            async with ctx.progress.timed(f"{label}: running", seconds):
                await asyncio.sleep(seconds)
            return mib(service.peak_rss_kib())
