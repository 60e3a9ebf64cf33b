"""Cancels of running attempts, against the in-memory store: a processor stops just the
cancelled attempt and writes `cancelled` (fenced like any outcome); a cancel that arrives
before a processor took the claim still stops it; one after the work is too late; the
lease keeper finds cancels whose notification was lost; an expired lease with a cancel
requested ends `cancelled` at the next claim."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from taskflow.actors.attempts import Attempts, CancelRequest
from taskflow.actors.cancels import control_subscriber, parse_control, stop_attempt
from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.metrics import Metrics
from taskflow.models import Claim, Status
from tests.unit.helpers import eventually, new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


@dataclass
class Rig:
    """Processors with long work, their attempts, a status writer and a lease keeper."""

    store: MemoryStore
    metrics: Metrics
    attempts: Attempts
    inbox: asyncio.Queue[Claim]
    pool: ProcessorPool
    keeper: LeaseKeeper

    async def claim(self, count: int) -> list[Claim]:
        """Claim `count` new tasks as the dispatcher would (held, not yet started)."""
        await self.store.insert_tasks([new_task(f"t{i}") for i in range(count)])
        claims = [claim for claim, _ in await self.store.claim(OWNER, 30, count)]
        for claim in claims:
            self.attempts.claimed(claim)
        return claims

    def status(self, claim: Claim) -> Status:
        return self.store.tasks[claim.task_id].status


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store, metrics = MemoryStore(), Metrics()
    attempts = Attempts(4)
    inbox: asyncio.Queue[Claim] = asyncio.Queue(10)
    writer = StatusWriter(store, metrics, owner=OWNER, capacity=4)
    pool = ProcessorPool(
        inbox, writer, metrics, attempts, size=4, work_min_s=60, work_max_s=60, failure_rate=0
    )
    keeper = LeaseKeeper(store, metrics, attempts, owner=OWNER, lease_s=30)
    writer.start()
    pool.start()
    yield Rig(store, metrics, attempts, inbox, pool, keeper)
    tasks = [*writer.tasks, *pool.tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def busy(rig: Rig) -> float:
    """Processors working on an attempt."""
    return sample(rig.metrics, "taskflow_processors_busy")


async def test_a_cancel_stops_only_its_attempt_and_writes_cancelled(rig: Rig) -> None:
    first, second = await rig.claim(2)
    for claim in (first, second):
        rig.inbox.put_nowait(claim)
    await eventually(lambda: busy(rig) == 2)

    result = stop_attempt(
        rig.attempts, rig.metrics, first.task_id, first.attempt, time.time(), via="test"
    )
    assert result is CancelRequest.STOPPING
    await eventually(lambda: rig.status(first) is Status.CANCELLED)
    task = rig.store.tasks[first.task_id]
    assert (task.result, task.error, task.cancel_requested_at) == (None, None, None)
    assert task.finished_at is not None
    assert rig.store.history(first.task_id) == [
        (Status.NEW, 0),
        (Status.IN_PROGRESS, 1),
        (Status.CANCELLED, 1),
    ]
    # The other attempt works on, in the same pool.
    await eventually(lambda: busy(rig) == 1)
    assert rig.status(second) is Status.IN_PROGRESS
    assert second.task_id in rig.attempts.held()
    assert first.task_id not in rig.attempts.held()
    assert sample(rig.metrics, "taskflow_cancel_latency_seconds_count") == 1
    # From the request (just now) to the committed stop: the test's own few moments.
    assert 0 <= sample(rig.metrics, "taskflow_cancel_latency_seconds_sum") < 10
    assert sample(rig.metrics, "taskflow_status_changes_total", status="cancelled") == 1


async def test_a_cancel_before_a_processor_took_the_claim_stops_it_at_once(rig: Rig) -> None:
    [claim] = await rig.claim(1)
    assert rig.attempts.request_cancel(claim.task_id, 1, time.time()) is CancelRequest.PENDING
    rig.inbox.put_nowait(claim)
    await eventually(lambda: rig.status(claim) is Status.CANCELLED)
    await eventually(lambda: busy(rig) == 0)


async def test_a_cancel_after_the_work_is_too_late_and_counted_once() -> None:
    metrics, attempts = Metrics(), Attempts(1)
    claim = Claim(uuid.uuid4(), 1, new_task().source)
    attempts.claimed(claim)
    attempts.started(claim)
    assert attempts.worked(claim) is None  # the work is over: the outcome is on its way
    # A notification, then the renewal that still sees the flag: counted on the first.
    first = stop_attempt(attempts, metrics, claim.task_id, 1, time.time(), via="test")
    assert first is CancelRequest.TOO_LATE
    assert sample(metrics, "taskflow_cancels_total", outcome="too_late") == 1
    again = stop_attempt(attempts, metrics, claim.task_id, 1, time.time(), via="test")
    assert again is CancelRequest.REPEATED
    assert sample(metrics, "taskflow_cancels_total", outcome="too_late") == 1


async def test_a_cancel_in_time_is_not_counted_too_late() -> None:
    metrics, attempts = Metrics(), Attempts(2)
    pending, running = (Claim(uuid.uuid4(), 1, new_task().source) for _ in range(2))
    for claim in (pending, running):
        attempts.claimed(claim)
    attempts.started(running)
    assert attempts.working(running, lambda: None) is False
    results = [
        stop_attempt(attempts, metrics, claim.task_id, 1, time.time(), via="test")
        for claim in (pending, running)
    ]
    assert results == [CancelRequest.PENDING, CancelRequest.STOPPING]
    assert sample(metrics, "taskflow_cancels_total", outcome="too_late") == 0


async def test_a_cancel_of_another_attempt_or_task_is_not_ours() -> None:
    attempts = Attempts(1)
    claim = Claim(uuid.uuid4(), 2, new_task().source)
    attempts.claimed(claim)
    assert attempts.request_cancel(claim.task_id, 1, 0.0) is CancelRequest.NOT_HERE
    assert attempts.request_cancel(uuid.uuid4(), 2, 0.0) is CancelRequest.NOT_HERE
    assert attempts.request_cancel(claim.task_id, 2, 0.0) is CancelRequest.PENDING
    assert attempts.request_cancel(claim.task_id, 2, 0.0) is CancelRequest.REPEATED


async def test_the_lease_renewal_finds_a_cancel_whose_notification_was_lost(rig: Rig) -> None:
    [claim] = await rig.claim(1)
    rig.inbox.put_nowait(claim)
    await eventually(lambda: busy(rig) == 1)
    await rig.store.cancel([claim.task_id])  # the flag is set; no notification arrives
    assert rig.status(claim) is Status.IN_PROGRESS
    await rig.keeper.renew_once()
    await eventually(lambda: rig.status(claim) is Status.CANCELLED)


async def test_an_expired_lease_with_a_cancel_requested_ends_cancelled_not_retried() -> None:
    store = MemoryStore()
    await store.insert_tasks([new_task()])
    [(claim, _)] = await store.claim(OWNER, 30, 1)
    await store.cancel([claim.task_id])
    store.advance(31)  # its holder died
    assert await store.claim("instance-b", 30, 10) == []
    assert store.history(claim.task_id) == [
        (Status.NEW, 0),
        (Status.IN_PROGRESS, 1),
        (Status.CANCELLED, 1),
    ]


async def test_the_control_subscriber_reads_payloads_and_renews_after_a_reconnect() -> None:
    attempts, metrics = Attempts(1), Metrics()
    claim = Claim(uuid.uuid4(), 3, new_task().source)
    attempts.claimed(claim)
    reconnects: list[None] = []
    subscriber = control_subscriber(attempts, metrics, lambda: reconnects.append(None))
    subscriber("garbage")
    subscriber(f"{uuid.uuid4()}:1:1.5")
    subscriber(None)
    assert reconnects == [None]
    subscriber(f"{claim.task_id}:3:1795991183.933655")
    assert attempts.request_cancel(claim.task_id, 3, 0.0) is CancelRequest.REPEATED
    assert parse_control(f"{claim.task_id}:3:12.5") == (claim.task_id, 3, 12.5)
    assert parse_control("a:b:c") is None
