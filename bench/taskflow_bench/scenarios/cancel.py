"""cancel: a cancel asked of one instance, of an attempt running on another instance
that runs 500 more; how long from the `202` to `cancelled` being committed?

Instance B (`--cancel-running` + `--cancel-count` attempts of 10 minutes each, 500 + 200
by default) claims every waiting task; instance A (one processor, nothing left to claim)
takes the cancels: `--cancel-count` of B's attempts, one after another, so that each is
measured alone and at least `--cancel-running` attempts run on B throughout.

A cancel's latency is its task's `finished_at` (set by the statement that commits
`cancelled` on B, by PostgreSQL's clock) minus the time its `202` arrived (this
machine's clock: PostgreSQL and the bench share the host). A commit that lands before
the `202` has been read counts as 0. Also reported, by PostgreSQL's clock alone: from
the request's commit (`cancel_requested_at` in the `202` body) to `cancelled`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import aiohttp

from taskflow_bench.database import BenchDatabase
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.service import ServiceConfig, running
from taskflow_bench.stats import histogram, percentile

WORK_S = 600.0
SETTLE_TIMEOUT_S = 60.0

METRICS = (
    MetricSpec("p50_ms", "202 → cancelled committed, p50", "ms", 1),
    MetricSpec("p99_ms", "202 → cancelled committed, p99", "ms", 1),
    MetricSpec("max_ms", "202 → cancelled committed, max", "ms", 1),
    MetricSpec("requested_p99_ms", "request committed → cancelled committed, p99", "ms", 1),
    MetricSpec("not_cancelled", "cancels not committed within 60 s", ""),
)
TARGETS = (Target("p99_ms", "<=", 200), Target("not_cancelled", "<=", 0))


async def run(ctx: Context) -> ScenarioResult:
    """Run the cancel scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "cancel",
        {
            "running": o.cancel_running,
            "cancels": o.cancel_count,
            "instances": 2,
            "work_s": WORK_S,
        },
        METRICS,
        TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        async with ctx.database() as db:
            result.runs.append(await _one_run(ctx, db, f"cancel {rep}/{o.repetitions}"))
    return result


async def _one_run(ctx: Context, db: BenchDatabase, label: str) -> dict[str, float]:
    cancels = ctx.options.cancel_count
    total = ctx.options.cancel_running + cancels
    await db.insert_waiting(total)
    runner = ctx.service_config(db.url, processors=total + 10, work_s=WORK_S)
    async with running(runner):
        with ctx.progress.bar(f"{label} claiming on B", total) as bar:
            async with asyncio.timeout(SETTLE_TIMEOUT_S):
                while len(ids := await db.running_ids()) < total:
                    bar.set(len(ids))
                    await asyncio.sleep(0.1)
            bar.set(total)
        api = ServiceConfig(
            database_url=db.url,
            amqp_url=runner.amqp_url,
            amqp_queue=runner.amqp_queue,
            processors=1,
            log_level=runner.log_level,
        )
        async with running(api) as a:
            answered, requested = await _cancel(ctx, a.urls[0], ids[:cancels], label)
            cancelled = await _wait_cancelled(db, list(answered))
    latencies = [
        max((at.timestamp() - answered[task_id]), 0.0)
        for task_id, at in cancelled.items()
        if at is not None
    ]
    hist = histogram(latencies)
    from_request = histogram(
        (at - requested[task_id]).total_seconds()
        for task_id, at in cancelled.items()
        if at is not None
    )
    return {
        "requested_p99_ms": percentile(from_request, 99) / 1000,
        "p50_ms": percentile(hist, 50) / 1000,
        "p99_ms": percentile(hist, 99) / 1000,
        "max_ms": percentile(hist, 100) / 1000,
        "not_cancelled": float(len(answered) - len(latencies)),
    }


async def _cancel(
    ctx: Context, url: str, ids: list[uuid.UUID], label: str
) -> tuple[dict[uuid.UUID, float], dict[uuid.UUID, datetime]]:
    """Cancel each task through A, one at a time; when each `202` arrived (epoch s), and
    each request's `cancel_requested_at`."""
    answered: dict[uuid.UUID, float] = {}
    requested: dict[uuid.UUID, datetime] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=url, timeout=timeout) as session:
        with ctx.progress.bar(f"{label} cancelling through A", len(ids)) as bar:
            for task_id in ids:
                async with session.post(f"/tasks/{task_id}/cancel") as response:
                    body = await response.json()
                    answered[task_id] = time.time()
                    if response.status != 202:
                        raise AssertionError(f"cancel of a running task: HTTP {response.status}")
                requested[task_id] = datetime.fromisoformat(body["cancel_requested_at"])
                bar.advance(1)
    return answered, requested


async def _wait_cancelled(
    db: BenchDatabase, ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime | None]:
    """Wait (at most `SETTLE_TIMEOUT_S`) until every task of `ids` is cancelled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_S
    while True:
        cancelled = await db.cancelled_at(ids)
        if all(at is not None for at in cancelled.values()) or loop.time() > deadline:
            return cancelled
        await asyncio.sleep(0.1)
