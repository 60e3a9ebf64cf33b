"""The intake actor against the in-memory store: group commit, overload, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from taskflow.actors.intake import Intake
from taskflow.db.store import CreateClaimed
from taskflow.errors import IdempotencyConflict, Overloaded, StoreError, StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.models import Claim, Status, Task
from tests.unit.helpers import grace, new_task, sample
from tests.unit.memory_store import MemoryStore


@dataclass
class Created:
    """What intake handed to the dispatcher."""

    batches: list[list[Task]] = field(default_factory=list)

    def __call__(self, tasks: Sequence[Task]) -> None:
        self.batches.append(list(tasks))

    @property
    def tasks(self) -> list[Task]:
        return [task for batch in self.batches for task in batch]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def created() -> Created:
    return Created()


@pytest.fixture
async def intake(store: MemoryStore, metrics: Metrics, created: Created) -> AsyncIterator[Intake]:
    intake = Intake(store, metrics, queue_size=1000, on_created=created)
    intake.start()
    yield intake
    await intake.cancel_loops()


async def test_many_concurrent_creates_become_few_inserts(
    store: MemoryStore, metrics: Metrics, created: Created, intake: Intake
) -> None:
    news = [new_task(f"t{i}") for i in range(500)]
    accepted = await asyncio.wait_for(asyncio.gather(*(intake.submit(n) for n in news)), 10)

    assert [a.task.id for a in accepted] == [n.id for n in news]
    assert all(a.created and a.task.status is Status.NEW for a in accepted)
    assert store.count("insert_tasks") <= 5
    assert sum(len(args) for op, args in store.calls if op == "insert_tasks") == 500
    assert sorted(t.id for t in created.tasks) == sorted(n.id for n in news)
    assert sample(metrics, "taskflow_db_batch_size_count", operation="insert") == store.count(
        "insert_tasks"
    )
    assert sample(metrics, "taskflow_db_batch_size_sum", operation="insert") == 500
    assert sample(metrics, "taskflow_tasks_created_total", source="http") == 500


@dataclass
class IdleProcessors:
    """Stands in for the dispatcher: `idle` processors for tasks created claimed."""

    idle: int
    claims: list[Claim] = field(default_factory=list)

    def reserve_for_created(self, count: int) -> CreateClaimed | None:
        taken = min(count, self.idle)
        self.idle -= taken
        return CreateClaimed("instance-a", 30, taken) if taken else None

    def created_claimed(self, reservation: CreateClaimed, claims: Sequence[Claim]) -> None:
        self.idle += reservation.count - len(claims)
        self.claims.extend(claims)


@pytest.mark.parametrize(("idle", "told"), [(10, 0), (3, 2)])
async def test_only_tasks_not_created_claimed_are_handed_to_the_dispatcher(
    store: MemoryStore, metrics: Metrics, created: Created, idle: int, told: int
) -> None:
    # Telling the dispatcher of nothing would still wake it, for a search of the table.
    processors = IdleProcessors(idle)
    intake = Intake(store, metrics, queue_size=100, on_created=created, claim_on_create=processors)
    intake.start()
    try:
        news = [new_task(f"t{i}") for i in range(5)]  # one batch
        accepted = await asyncio.wait_for(asyncio.gather(*(intake.submit(n) for n in news)), 10)
    finally:
        await intake.cancel_loops()
    assert len(processors.claims) == 5 - told
    assert len(created.tasks) == told
    assert created.batches == ([[a.task for a in accepted[5 - told :]]] if told else [])


async def test_creates_arriving_during_a_write_form_the_next_batch(
    store: MemoryStore, intake: Intake
) -> None:
    store.hold("insert_tasks")
    first = asyncio.create_task(intake.submit(new_task("first")))
    await store.entered("insert_tasks")
    rest = [asyncio.create_task(intake.submit(new_task(f"t{i}"))) for i in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    store.let_go("insert_tasks")
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert [len(args) for op, args in store.calls if op == "insert_tasks"] == [1, 50]


async def test_a_full_queue_answers_overloaded_at_once(
    store: MemoryStore, metrics: Metrics, created: Created
) -> None:
    intake = Intake(store, metrics, queue_size=3, on_created=created)  # not running: no drain
    waiting = [asyncio.create_task(intake.submit(new_task(f"t{i}"))) for i in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await intake.submit(new_task("one too many"))
    assert sample(metrics, "taskflow_intake_rejected_total", reason="full") == 1
    assert not any(w.done() for w in waiting)

    runner = asyncio.create_task(intake.run())
    try:
        accepted = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert all(a.created for a in accepted)
        assert len(store.tasks) == 3
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_repeat_with_the_same_key_and_body_returns_the_first_task(
    store: MemoryStore, created: Created, intake: Intake
) -> None:
    first = await intake.submit(new_task("resize", key="k-1", w=100))
    again = await intake.submit(new_task("resize", key="k-1", w=100))
    assert first.created
    assert not again.created
    assert again.task.id == first.task.id
    assert len(store.tasks) == 1
    assert created.tasks == [first.task]


async def test_the_same_key_with_another_body_is_a_conflict(intake: Intake) -> None:
    first = await intake.submit(new_task("resize", key="k-1", w=100))
    with pytest.raises(IdempotencyConflict) as caught:
        await intake.submit(new_task("resize", key="k-1", w=200))
    assert caught.value.details["task_id"] == str(first.task.id)


async def test_repeats_within_one_batch_make_one_task(
    store: MemoryStore, created: Created, intake: Intake
) -> None:
    same = [new_task("resize", key="k-1", w=100) for _ in range(20)]
    other = new_task("resize", key="k-1", w=999)
    results = await asyncio.wait_for(
        asyncio.gather(*(intake.submit(n) for n in [*same, other]), return_exceptions=True), 10
    )
    assert store.count("insert_tasks") == 1
    accepted, conflict = results[:-1], results[-1]
    assert isinstance(conflict, IdempotencyConflict)
    assert len(store.tasks) == 1
    assert len({a.task.id for a in accepted}) == 1  # type: ignore[union-attr]
    assert sum(a.created for a in accepted) == 1  # type: ignore[union-attr]
    assert len(created.tasks) == 1


async def test_a_failed_write_fails_its_batch_and_intake_carries_on(
    store: MemoryStore, metrics: Metrics, intake: Intake
) -> None:
    store.fail("insert_tasks", StoreUnavailable("connection refused"))
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(intake.submit(new_task("lost")), 10)
    assert sample(metrics, "taskflow_db_up") == 0
    store.fail("insert_tasks", StoreError("rejected"))
    with pytest.raises(StoreError):
        await asyncio.wait_for(intake.submit(new_task("rejected")), 10)

    accepted = await asyncio.wait_for(intake.submit(new_task("kept")), 10)
    assert accepted.created
    assert [t.title for t in store.tasks.values()] == ["kept"]
    assert sample(metrics, "taskflow_db_up") == 1


async def test_creates_queued_behind_a_batch_postgresql_refused_fail_with_it(
    store: MemoryStore, intake: Intake
) -> None:
    # During an outage every create gets its 503 within one store timeout, however many
    # wait: those queued behind the failed batch get its error instead of a try of their own.
    store.fail("insert_tasks", StoreUnavailable("connection refused"))
    first = asyncio.create_task(intake.submit(new_task("first")))
    await store.entered("insert_tasks")
    queued = [intake.offer(new_task(f"t{i}")) for i in range(20)]  # in the inbox now
    results = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), 10)
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    assert store.count("insert_tasks") == 1

    accepted = await asyncio.wait_for(intake.submit(new_task("after")), 10)  # tried again
    assert accepted.created


async def test_stopping_refuses_new_creates_and_waits_for_queued_ones(
    store: MemoryStore, metrics: Metrics, intake: Intake
) -> None:
    store.hold("insert_tasks")
    queued = [asyncio.create_task(intake.submit(new_task(f"t{i}"))) for i in range(5)]
    await store.entered("insert_tasks")
    await intake.stop_taking_work(grace(10))
    draining = asyncio.create_task(intake.finish(grace(10)))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await intake.submit(new_task("too late"))
    assert sample(metrics, "taskflow_intake_rejected_total", reason="stopping") == 1
    assert not draining.done()
    store.let_go("insert_tasks")
    await asyncio.wait_for(draining, 10)
    assert all(a.created for a in await asyncio.gather(*queued))
    assert all(task.done() for task in intake.tasks)
