"""The pipeline's store rules, run against PostgreSQL and against the unit tests' fake.

The same scenarios pass on both, which is what makes `MemoryStore` a faithful stand-in
for `TaskStore` in the actors' unit tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from taskflow.actors.ports import PipelineStore
from taskflow.db.store import CreateClaimed, TaskStore
from taskflow.models import Claim, Outcome, Status
from tests.unit.helpers import new_task
from tests.unit.memory_store import MemoryStore

A, B = "instance-a", "instance-b"


@dataclass
class Backend:
    """A store, and how a test reads a task's status and makes all leases run out."""

    store: PipelineStore
    status: Callable[[uuid.UUID], Awaitable[tuple[Status, int]]]
    expire_leases: Callable[[], Awaitable[None]]


@pytest.fixture(params=["postgresql", "memory"])
async def backend(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryStore()

        async def memory_status(task_id: uuid.UUID) -> tuple[Status, int]:
            task = memory.tasks[task_id]
            return task.status, task.attempts

        async def memory_expire() -> None:
            memory.advance(3600)

        yield Backend(memory, memory_status, memory_expire)
        return

    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        async with TaskStore.connect(db_url) as store:

            async def pg_status(task_id: uuid.UUID) -> tuple[Status, int]:
                row = await conn.fetchrow(
                    "SELECT status, attempts FROM tasks WHERE id = $1", task_id
                )
                assert row is not None
                return Status(row["status"]), row["attempts"]

            async def pg_expire() -> None:
                await conn.execute(
                    "UPDATE tasks SET lease_expires_at = now() - interval '1 hour' "
                    "WHERE status = 'in_progress'"
                )

            yield Backend(store, pg_status, pg_expire)
    finally:
        await conn.close()


async def test_an_idempotency_key_names_one_task(backend: Backend) -> None:
    store = backend.store
    a1, a2 = new_task("a", key="k1"), new_task("a", key="k1")
    b = new_task("b", key="k2")
    plain = new_task("no key")
    first = await store.insert_tasks([a1, a2, b, plain])
    assert [t.id for t in first.created] == [a1.id, b.id, plain.id]
    assert set(first.existing) == {"k1"}
    task, fingerprint = first.existing["k1"]
    assert (task.id, fingerprint) == (a1.id, a1.fingerprint())

    again = await store.insert_tasks([new_task("other", key="k2"), new_task("new", key="k3")])
    assert [t.title for t in again.created] == ["new"]
    task, fingerprint = again.existing["k2"]
    assert (task.id, fingerprint) == (b.id, b.fingerprint())
    assert all(t.status is Status.NEW and t.attempts == 0 for t in first.created)


async def test_claims_start_attempts_up_to_the_limit(backend: Backend) -> None:
    store = backend.store
    created = (await store.insert_tasks([new_task(f"t{i}") for i in range(5)])).created
    claimed = await store.claim(A, 30, 3)
    assert len(claimed) == 3
    assert all(claim.attempt == 1 and not recovered for claim, recovered in claimed)
    rest = await store.claim(B, 30, 10)
    assert len(rest) == 2
    assert {c.task_id for c, _ in claimed + rest} == {t.id for t in created}
    assert await store.claim(A, 30, 10) == []
    for task in created:
        assert await backend.status(task.id) == (Status.IN_PROGRESS, 1)


async def test_claim_new_takes_only_tasks_still_new(backend: Backend) -> None:
    store = backend.store
    created = (await store.insert_tasks([new_task(f"t{i}") for i in range(3)])).created
    [(taken, _)] = await store.claim(B, 30, 1)
    ids = [t.id for t in created]
    mine = await store.claim_new([*ids, uuid.uuid4()], A, 30)
    assert {c.task_id for c in mine} == set(ids) - {taken.task_id}
    assert all(c.attempt == 1 for c in mine)


async def test_an_outcome_is_written_only_by_its_attempt(backend: Backend) -> None:
    store = backend.store
    await store.insert_tasks([new_task("t")])
    [(claim, _)] = await store.claim(A, 30, 1)
    wrong_attempt = Claim(claim.task_id, claim.attempt + 1, claim.source)

    assert await store.finish([Outcome(claim, Status.COMPLETED, result={})], B) == set()
    assert await store.finish([Outcome(wrong_attempt, Status.COMPLETED, result={})], A) == set()
    assert await backend.status(claim.task_id) == (Status.IN_PROGRESS, 1)

    failed = Outcome(claim, Status.FAILED, error="boom")
    assert await store.finish([failed], A) == {(claim.task_id, 1)}
    assert await backend.status(claim.task_id) == (Status.FAILED, 1)
    # A retry of the attempt's own write (its answer lost on the way) is reported as
    # written, and changes nothing: the attempt is terminal.
    assert await store.finish([failed], A) == {(claim.task_id, 1)}
    assert await backend.status(claim.task_id) == (Status.FAILED, 1)
    assert await store.renew([claim.task_id], A, 30) == {}


async def test_an_expired_lease_is_a_new_attempt_and_fences_the_old_one(backend: Backend) -> None:
    store = backend.store
    await store.insert_tasks([new_task("t")])
    [(old, _)] = await store.claim(A, 30, 1)
    assert await store.renew([old.task_id], A, 30) == {old.task_id: None}
    assert await store.renew([old.task_id], B, 30) == {}

    await backend.expire_leases()
    [(new, recovered)] = await store.claim(B, 30, 10)
    assert recovered
    assert (new.task_id, new.attempt) == (old.task_id, 2)
    assert await store.renew([old.task_id], A, 30) == {}

    both = [Outcome(old, Status.COMPLETED, result={}), Outcome(new, Status.FAILED, error="x")]
    assert await store.finish(both, A) == set()
    assert await store.finish(both, B) == {(new.task_id, 2)}
    assert await backend.status(new.task_id) == (Status.FAILED, 2)


async def test_an_instance_never_claims_again_an_attempt_it_still_runs(backend: Backend) -> None:
    store = backend.store
    await store.insert_tasks([new_task("a"), new_task("b")])
    running, given_up = [c for c, _ in await store.claim(A, 30, 2)]
    await backend.expire_leases()  # A was paused past its leases; it still runs `running`
    retaken = await store.claim(A, 30, 10, running=[running.task_id])
    assert [(c.task_id, c.attempt, recovered) for c, recovered in retaken] == [
        (given_up.task_id, 2, True)
    ]
    # The attempt it runs renews its lease (or would be fenced): no second one next to it.
    assert await store.renew([running.task_id], A, 30) == {running.task_id: None}
    assert await backend.status(running.task_id) == (Status.IN_PROGRESS, 1)


async def test_a_released_lease_is_claimable_at_once(backend: Backend) -> None:
    store = backend.store
    await store.insert_tasks([new_task("a"), new_task("b")])
    claims = [c for c, _ in await store.claim(A, 30, 2)]
    await store.release([claims[0].task_id], B)  # not B's to release
    assert await store.claim(B, 30, 10) == []
    await store.release([c.task_id for c in claims], A)
    retaken = await store.claim(B, 30, 10)
    assert {(c.task_id, c.attempt, recovered) for c, recovered in retaken} == {
        (c.task_id, 2, True) for c in claims
    }


async def test_tasks_created_claimed_start_their_first_attempt(backend: Backend) -> None:
    store = backend.store
    mine, other = new_task("mine"), new_task("other")
    result = await store.insert_tasks([mine, other], CreateClaimed(A, 30, 1))
    assert result.claimed == [Claim(mine.id, 1, mine.source)]
    assert [(t.id, t.status, t.attempts) for t in result.created] == [
        (mine.id, Status.IN_PROGRESS, 1),
        (other.id, Status.NEW, 0),
    ]
    # Held by A: renewed by A only, not claimed again, and finished only by its attempt.
    assert await store.renew([mine.id], B, 30) == {}
    assert await store.renew([mine.id], A, 30) == {mine.id: None}
    assert [c.task_id for c, _ in await store.claim(B, 30, 10)] == [other.id]
    [claim] = result.claimed
    assert await store.finish([Outcome(claim, Status.COMPLETED, result={})], B) == set()
    assert await store.finish([Outcome(claim, Status.COMPLETED, result={})], A) == {(mine.id, 1)}
    assert await backend.status(mine.id) == (Status.COMPLETED, 1)


async def test_a_task_created_claimed_is_taken_over_when_its_lease_runs_out(
    backend: Backend,
) -> None:
    store = backend.store
    task = new_task("t")
    [old] = (await store.insert_tasks([task], CreateClaimed(A, 30, 1))).claimed
    await backend.expire_leases()
    [(new, recovered)] = await store.claim(B, 30, 10)
    assert recovered
    assert (new.task_id, new.attempt) == (task.id, 2)
    assert await store.finish([Outcome(old, Status.COMPLETED, result={})], A) == set()
