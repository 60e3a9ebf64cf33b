"""store: what PostgreSQL spends on the lifecycle of a task, without the service.

taskflow's own `TaskStore`, on one connection, creates `--store-tasks` tasks already
claimed (as intake does when processors are idle) and finishes them, one in ten failed,
in batches of 10, 100 and 1,000 tasks, each size on a fresh database; a tenth of the tasks
go first, then ANALYZE (as the service's analyzer would), then the measured rest. Reported:
PostgreSQL's CPU time per task at each size, every process of the server counted (from
/proc; the scenario is skipped for a server on another machine). The cost of one statement
and its commit is shared by fewer tasks in small batches: the sizes tell that part from the
cost of each row. A schema or query change shows here without the service's CPU time in the
way, and CPU time moves much less than rates with the machine's load.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from taskflow.db.store import CreateClaimed, TaskStore
from taskflow.models import Claim, NewTask, Outcome, Source, Status
from taskflow_bench.report import MetricSpec, ScenarioResult
from taskflow_bench.report import Outcome as RunOutcome
from taskflow_bench.scenarios.context import Context

BATCHES = (10, 100, 1000)
FAILURE_RATE = 0.1
OWNER = "taskflow-bench-store"
LEASE_S = 300.0

METRICS = tuple(
    MetricSpec(f"pg_us_{size}", f"PostgreSQL CPU per task, batches of {size:,}", "µs", 0)
    for size in BATCHES
)


async def run(ctx: Context) -> ScenarioResult:
    """Run the store scenario `--repetitions` times, every batch size in each."""
    o = ctx.options
    result = ScenarioResult("store", {"tasks": o.store_tasks, "batches": list(BATCHES)}, METRICS)
    for rep in range(1, o.repetitions + 1):
        run: dict[str, float] = {}
        for size in BATCHES:
            cpu = await pg_cpu_per_task(ctx, o.store_tasks, size, f"store {rep} batch {size}")
            if cpu is None:
                result.outcome = RunOutcome.SKIPPED
                result.note = "PostgreSQL runs on another machine: its CPU time cannot be read"
                return result
            run[f"pg_us_{size}"] = cpu
        result.runs.append(run)
    return result


async def pg_cpu_per_task(ctx: Context, tasks: int, size: int, label: str) -> float | None:
    """PostgreSQL's CPU µs per task created claimed and finished in batches of `size`."""
    size = min(size, tasks)
    warm_up = max(size, tasks // 10 // size * size)
    async with ctx.database() as db:
        meter = await db.server_cpu()
        if meter is None:
            return None
        async with TaskStore.connect(db.url, max_size=1) as store:
            with ctx.progress.bar(label, tasks) as bar:
                done = 0
                while done < warm_up:
                    done += await _lifecycle(store, min(size, tasks - done))
                    bar.set(done)
                await db.analyze()
                before = meter.seconds()
                while done < tasks:
                    done += await _lifecycle(store, min(size, tasks - done))
                    bar.set(done)
                spent = meter.seconds() - before
    return spent * 1e6 / max(1, tasks - warm_up)


async def _lifecycle(store: TaskStore, count: int) -> int:
    """Create `count` tasks already claimed, then finish them; how many were finished."""
    batch = [
        NewTask(title="bench", description=None, payload={"n": n}, source=Source.AMQP)
        for n in range(count)
    ]
    created = await store.insert_tasks(batch, CreateClaimed(OWNER, LEASE_S, count))
    return len(await store.finish(_outcomes(created.claimed), OWNER))


def _outcomes(claims: Sequence[Claim]) -> list[Outcome]:
    """One outcome per claim: completed with a result, or (one in ten) failed."""
    return [
        Outcome(c, Status.FAILED, error="bench")
        if random.random() < FAILURE_RATE
        else Outcome(c, Status.COMPLETED, result={"ok": True})
        for c in claims
    ]
