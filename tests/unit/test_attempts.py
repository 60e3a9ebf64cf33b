"""`Attempts`: the attempts held here and the free processor slots, in one place."""

from __future__ import annotations

import asyncio
import uuid

from taskflow.actors.attempts import Attempts
from taskflow.models import Claim, Source


def claim(task_id: uuid.UUID | None = None, attempt: int = 1) -> Claim:
    return Claim(task_id or uuid.uuid4(), attempt, Source.HTTP)


async def test_a_claim_takes_a_slot_and_is_held_until_it_ends() -> None:
    attempts = Attempts(2)
    first, second = claim(), claim()
    attempts.claimed(first)
    attempts.claimed(second)
    assert attempts.free == 0
    assert set(attempts.held()) == {first.task_id, second.task_id}

    attempts.free_slot()  # the outcome was handed over: the processor takes another
    assert attempts.free == 1
    assert first.task_id in attempts.held()  # still held until the commit
    attempts.ended(first)
    assert list(attempts.held()) == [second.task_id]


async def test_wait_free_waits_for_a_slot() -> None:
    attempts = Attempts(1)
    assert await attempts.wait_free() == 1
    attempts.claimed(claim())
    waiting = asyncio.create_task(attempts.wait_free())
    await asyncio.sleep(0)
    assert not waiting.done()
    attempts.free_slot()
    assert await asyncio.wait_for(waiting, 5) == 1


async def test_an_older_attempt_ending_leaves_the_newer_one_held() -> None:
    attempts = Attempts(2)
    older = claim()
    newer = claim(older.task_id, attempt=2)
    attempts.started(older)
    attempts.started(newer)
    attempts.ended(older)
    assert list(attempts.held()) == [newer.task_id]
    attempts.ended(newer)
    assert list(attempts.held()) == []
