"""`Attempts`: the attempts held here and the free processor slots, in one place."""

from __future__ import annotations

import asyncio
import uuid

from taskflow.actors.attempts import Attempts, CancelRequest
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


async def test_slots_given_back_unused_wake_a_claimer_waiting_for_one() -> None:
    attempts = Attempts(2)
    assert attempts.reserve(5) == 2  # intake takes every free slot for a batch created claimed
    waiting = asyncio.create_task(attempts.wait_free())  # the dispatcher
    await asyncio.sleep(0)
    assert not waiting.done()
    attempts.unreserve(2)  # the batch's tasks all existed already: nothing was claimed
    assert await asyncio.wait_for(waiting, 5) == 2


async def test_the_next_attempt_of_a_task_starts_clean_of_the_last_ones_cancel() -> None:
    attempts = Attempts(1)
    first = claim()
    attempts.claimed(first)
    attempts.started(first)
    assert attempts.request_cancel(first.task_id, 1, 1.0) is CancelRequest.PENDING
    assert attempts.working(first, lambda: None)  # stops at once: it ends `cancelled`
    assert attempts.worked(first) == 1.0
    attempts.free_slot()
    attempts.ended(first)

    # Retried, and claimed here again: attempt 2 knows nothing of attempt 1's cancel.
    second = claim(first.task_id, attempt=2)
    attempts.claimed(second)
    attempts.started(second)
    assert attempts.request_cancel(second.task_id, 2, 2.0) is CancelRequest.PENDING
    stopped: list[bool] = []
    assert attempts.working(second, lambda: stopped.append(True))
    assert not stopped  # asked before the work began: the processor stops it itself
    assert attempts.worked(second) == 2.0


async def test_a_cancel_of_a_retried_attempt_that_finished_its_work_is_not_too_late() -> None:
    attempts = Attempts(1)
    first = claim()
    attempts.claimed(first)
    attempts.started(first)
    attempts.working(first, lambda: None)
    assert attempts.worked(first) is None  # completed, no cancel
    attempts.free_slot()
    attempts.ended(first)

    second = claim(first.task_id, attempt=2)
    attempts.claimed(second)
    attempts.started(second)
    stopped: list[bool] = []
    assert not attempts.working(second, lambda: stopped.append(True))
    assert attempts.request_cancel(second.task_id, 2, 3.0) is CancelRequest.STOPPING
    assert stopped == [True]
