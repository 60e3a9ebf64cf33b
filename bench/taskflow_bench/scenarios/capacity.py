"""capacity: many processors with 1 s of work each; tasks/s against the ideal, and memory.

`--capacity-processors` processors per instance and `processors * --capacity-seconds`
waiting tasks: ideally they finish in `--capacity-seconds`, at `processors` tasks/s per
instance. The efficiency is the measured rate over that ideal.
"""

from __future__ import annotations

from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.drain import process_waiting
from taskflow_bench.stats import ratio

WORK_S = 1.0

METRICS = (
    MetricSpec("tasks_per_s", "tasks/s", "1/s"),
    MetricSpec("ideal_per_s", "ideal tasks/s (processors / 1 s)", "1/s"),
    MetricSpec("efficiency", "tasks/s / ideal", "", 3),
    MetricSpec("bad_histories", "tasks without their 3 status changes", ""),
    MetricSpec("peak_rss_mib", "peak RSS per instance", "MiB"),
)
TARGETS = (
    Target("efficiency", ">=", 0.9),
    Target("peak_rss_mib", "<=", 300),
    Target("bad_histories", "<=", 0),
)


async def run(ctx: Context) -> ScenarioResult:
    """Run the capacity scenario `--repetitions` times."""
    o = ctx.options
    processors = o.capacity_processors
    tasks = round(processors * o.instances * o.capacity_seconds)
    ideal = processors * o.instances / WORK_S
    result = ScenarioResult(
        "capacity",
        {
            "processors": processors,
            "instances": o.instances,
            "work_s": WORK_S,
            "tasks": tasks,
        },
        METRICS,
        TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        async with ctx.database() as db:
            config = ctx.service_config(db.url, processors=processors, work_s=WORK_S)
            run = await process_waiting(ctx, db, config, tasks, f"capacity {rep}/{o.repetitions}")
        run["ideal_per_s"] = ideal
        run["efficiency"] = ratio(run["tasks_per_s"], ideal)
        result.runs.append(run)
    return result
