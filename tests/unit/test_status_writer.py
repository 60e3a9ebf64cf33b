"""The status writer against the in-memory store: batched, fenced, never dropping outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from taskflow.actors.status_writer import StatusWriter
from taskflow.errors import StoreError, StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.models import Claim, Outcome, Status
from tests.unit.helpers import grace, new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def writer(store: MemoryStore, metrics: Metrics) -> AsyncIterator[StatusWriter]:
    writer = StatusWriter(store, metrics, owner=OWNER, capacity=100, max_backoff=0.05)
    writer.start()
    yield writer
    await writer.cancel_loops()


async def claimed(store: MemoryStore, count: int, owner: str = OWNER) -> list[Claim]:
    await store.insert_tasks([new_task(f"t{i}") for i in range(count)])
    return [claim for claim, _ in await store.claim(owner, 30, count)]


def completed(claim: Claim) -> Outcome:
    return Outcome(claim, Status.COMPLETED, result={"ok": True})


async def test_many_outcomes_become_few_writes(
    store: MemoryStore, metrics: Metrics, writer: StatusWriter
) -> None:
    claims = await claimed(store, 100)
    results = await asyncio.gather(*(writer.write(completed(c)) for c in claims))
    assert results == [True] * 100
    assert all(store.tasks[c.task_id].status is Status.COMPLETED for c in claims)
    assert store.count("finish") <= 10
    assert sample(metrics, "taskflow_db_batch_size_count", operation="finish") == store.count(
        "finish"
    )
    assert sample(metrics, "taskflow_status_changes_total", status="completed") == 100


async def test_outcomes_are_kept_and_retried_while_the_database_is_unreachable(
    store: MemoryStore, metrics: Metrics, writer: StatusWriter
) -> None:
    claims = await claimed(store, 3)
    outage = [StoreUnavailable("connection refused")] * 8  # more than max_errors
    store.fail("finish", *outage)
    failed = Outcome(claims[2], Status.FAILED, error="boom")
    loop = asyncio.get_running_loop()
    began = loop.time()
    results = await asyncio.wait_for(
        asyncio.gather(writer.write(completed(claims[0])), writer.write(completed(claims[1])),
                       writer.write(failed)),
        10,
    )  # fmt: skip
    assert list(results) == [True, True, True]
    # Not hammering an unreachable database: each retry waited its backoff (0.05 s here).
    assert loop.time() - began >= 8 * 0.05
    assert [store.tasks[c.task_id].status for c in claims] == [
        Status.COMPLETED,
        Status.COMPLETED,
        Status.FAILED,
    ]
    assert store.tasks[claims[2].task_id].error == "boom"
    assert sample(metrics, "taskflow_status_write_retries_total") == 8
    assert sample(metrics, "taskflow_db_up") == 1


async def test_an_error_that_is_not_an_outage_is_retried_a_few_times(
    store: MemoryStore, writer: StatusWriter
) -> None:
    [claim] = await claimed(store, 1)
    store.fail("finish", StoreError("deadlock detected"), StoreError("deadlock detected"))
    assert await asyncio.wait_for(writer.write(completed(claim)), 10) is True
    assert store.tasks[claim.task_id].status is Status.COMPLETED


async def test_an_error_that_persists_is_raised_to_the_processor(
    store: MemoryStore, writer: StatusWriter
) -> None:
    [claim] = await claimed(store, 1)
    store.fail("finish", *[StoreError("check violation")] * 5)
    with pytest.raises(StoreError):
        await asyncio.wait_for(writer.write(completed(claim)), 10)
    assert store.count("finish") == 5  # max_errors tries, then the processor is told
    [other] = await claimed(store, 1)
    assert await asyncio.wait_for(writer.write(completed(other)), 10) is True


async def test_a_fenced_write_is_reported_false_and_counted(
    store: MemoryStore, metrics: Metrics, writer: StatusWriter
) -> None:
    [mine, still_mine] = await claimed(store, 2)
    store.advance(20)
    assert await store.renew([still_mine.task_id], OWNER, 30) == {still_mine.task_id: None}
    store.advance(11)  # the other lease ran out: another instance takes that task over
    [(theirs, recovered)] = await store.claim("instance-b", 30, 10)
    assert recovered
    assert theirs.task_id == mine.task_id

    results = await asyncio.gather(
        writer.write(completed(mine)), writer.write(completed(still_mine))
    )
    assert list(results) == [False, True]
    task = store.tasks[mine.task_id]
    assert (task.status, task.attempts) == (Status.IN_PROGRESS, theirs.attempt)
    assert store.leases[mine.task_id].owner == "instance-b"
    assert sample(metrics, "taskflow_fenced_writes_total") == 1
    assert sample(metrics, "taskflow_status_changes_total", status="completed") == 1


async def test_a_stale_and_a_current_attempt_in_one_batch_are_told_apart(
    store: MemoryStore, metrics: Metrics, writer: StatusWriter
) -> None:
    [stale] = await claimed(store, 1)
    store.advance(31)
    [(current, _)] = await store.claim(OWNER, 30, 1)  # this instance claimed it again

    results = await asyncio.gather(writer.write(completed(stale)), writer.write(completed(current)))
    assert list(results) == [False, True]
    assert store.history(stale.task_id)[-1] == (Status.COMPLETED, current.attempt)
    assert sample(metrics, "taskflow_fenced_writes_total") == 1
    assert sample(metrics, "taskflow_status_changes_total", status="completed") == 1


async def test_finish_waits_for_handed_over_outcomes(
    store: MemoryStore, writer: StatusWriter
) -> None:
    claims = await claimed(store, 5)
    store.hold("finish")
    writes = [asyncio.create_task(writer.write(completed(c))) for c in claims]
    await store.entered("finish")
    draining = asyncio.create_task(writer.finish(grace(10)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not draining.done()
    store.let_go("finish")
    await asyncio.wait_for(draining, 10)
    assert await asyncio.gather(*writes) == [True] * 5
