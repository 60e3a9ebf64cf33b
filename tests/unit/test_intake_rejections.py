"""The intake refuses creates it cannot take, and counts each refusal by its reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

import pytest

from taskflow.actors.intake import Intake
from taskflow.db.store import CreateClaimed, InsertResult
from taskflow.errors import Overloaded
from taskflow.lifecycle import Grace
from taskflow.metrics import Metrics
from taskflow.models import Claim, NewTask, Outcome, Source, Task


class StalledStore:
    """A store whose inserts wait until `unblock` is set (PostgreSQL hanging)."""

    def __init__(self) -> None:
        self.unblock = asyncio.Event()
        self.inserting = asyncio.Event()

    async def insert_tasks(
        self, batch: Sequence[NewTask], claim: CreateClaimed | None = None
    ) -> InsertResult:
        self.inserting.set()
        await self.unblock.wait()
        return InsertResult([], {})

    async def claim(
        self, owner: str, lease_s: float, limit: int, running: Collection[uuid.UUID] = ()
    ) -> list[tuple[Claim, bool]]:
        raise NotImplementedError

    async def claim_new(self, ids: Sequence[uuid.UUID], owner: str, lease_s: float) -> list[Claim]:
        raise NotImplementedError

    async def finish(self, outcomes: Sequence[Outcome], owner: str) -> set[tuple[uuid.UUID, int]]:
        raise NotImplementedError

    async def renew(
        self, ids: Iterable[uuid.UUID], owner: str, lease_s: float
    ) -> dict[uuid.UUID, datetime | None]:
        raise NotImplementedError

    async def release(self, ids: Iterable[uuid.UUID], owner: str) -> set[uuid.UUID]:
        raise NotImplementedError


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("taskflow_intake_rejected_total", {"reason": reason})
    return value or 0.0


def new_task() -> NewTask:
    return NewTask(title="t", description=None, payload={}, source=Source.HTTP)


def ignore(_tasks: Sequence[Task]) -> None:
    return None


async def test_full_queue_and_timeout_are_counted_apart() -> None:
    store, metrics = StalledStore(), Metrics()
    intake = Intake(store, metrics, queue_size=1, on_created=ignore, submit_timeout=0.2)
    runner = asyncio.create_task(intake.run())
    try:
        first = asyncio.create_task(intake.submit(new_task()))
        async with asyncio.timeout(5):
            await store.inserting.wait()  # the first is being written: the queue is empty
        second = asyncio.create_task(intake.submit(new_task()))  # fills the queue
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="full"):
            await intake.submit(new_task())
        assert rejected(metrics, "full") == 1
        for waiting in (first, second):
            with pytest.raises(Overloaded, match="in time"):
                await waiting
        assert rejected(metrics, "timeout") == 2
    finally:
        store.unblock.set()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_stopping_is_counted() -> None:
    metrics = Metrics()
    intake = Intake(StalledStore(), metrics, queue_size=1, on_created=ignore)
    await intake.stop_taking_work(Grace.starting_now(1))
    with pytest.raises(Overloaded, match="shutting down"):
        await intake.submit(new_task())
    assert rejected(metrics, "stopping") == 1
    assert rejected(metrics, "full") == 0
