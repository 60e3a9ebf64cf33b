"""The dispatcher against the in-memory store: claims only for idle processors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from taskflow.actors.attempts import Attempts
from taskflow.actors.dispatcher import Dispatcher
from taskflow.db.store import CreateClaimed
from taskflow.errors import StoreError, StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.models import Claim, Status
from tests.unit.helpers import eventually, grace, new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


class CountingStore(MemoryStore):
    """Checks, at every claim, that claimed-but-unfinished attempts never exceed the slots."""

    def __init__(self, slots: int) -> None:
        super().__init__()
        self.slots = slots
        self.freed = 0
        self.most_outstanding = 0

    def _start_attempt(self, task_id: uuid.UUID, owner: str, lease_s: float) -> Claim:
        claim = super()._start_attempt(task_id, owner, lease_s)
        started = sum(1 for t in self.tasks.values() if t.attempts > 0)
        self.most_outstanding = max(self.most_outstanding, started - self.freed)
        assert started - self.freed <= self.slots, "claimed more than there are idle processors"
        return claim


async def add_tasks(store: MemoryStore, count: int) -> list[uuid.UUID]:
    result = await store.insert_tasks([new_task(f"t{i}") for i in range(count)])
    return [task.id for task in result.created]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Tasks to cancel (and await) when the test ends."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start_dispatcher(
    store: MemoryStore,
    metrics: Metrics,
    running: list[asyncio.Task[None]],
    *,
    slots: int,
    poll_s: float,
    attempts: Attempts | None = None,
) -> Dispatcher:
    """A dispatcher of `slots` processors (sharing `attempts`, if given), running until the
    test ends."""
    attempts = Attempts(slots) if attempts is None else attempts
    dispatcher = Dispatcher(
        store, metrics, attempts, owner=OWNER, lease_s=30, slots=slots, poll_s=poll_s
    )
    running.append(asyncio.create_task(dispatcher.run()))
    return dispatcher


async def idle_dispatcher(
    store: MemoryStore, metrics: Metrics, running: list[asyncio.Task[None]], *, slots: int
) -> Dispatcher:
    """A running dispatcher whose first poll found nothing: the next is 60 s away."""
    dispatcher = start_dispatcher(store, metrics, running, slots=slots, poll_s=60)
    await eventually(lambda: store.count("claim") == 1)
    return dispatcher


async def test_never_claims_more_than_the_free_slots(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = CountingStore(slots=3)
    ids = await add_tasks(store, 20)
    attempts = Attempts(3)
    dispatcher = start_dispatcher(store, metrics, running, slots=3, poll_s=0.01, attempts=attempts)

    done: list[Claim] = []
    async with asyncio.timeout(10):
        while len(done) < 20:
            claim = await dispatcher.outbox.get()
            for _ in range(3):  # let the dispatcher try to over-claim
                await asyncio.sleep(0)
            store.freed += 1
            done.append(claim)
            attempts.free_slot()

    assert sorted(c.task_id for c in done) == sorted(ids)
    assert store.most_outstanding == 3
    assert all(args[2] <= 3 for op, args in store.calls if op == "claim")


async def test_claims_nothing_while_every_processor_is_busy(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    await add_tasks(store, 5)
    dispatcher = start_dispatcher(store, metrics, running, slots=2, poll_s=0.01)
    await eventually(dispatcher.outbox.full)
    claims_so_far = store.count("claim")
    dispatcher.wake()
    for _ in range(50):
        await asyncio.sleep(0)
    assert store.count("claim") == claims_so_far
    assert sum(t.status is Status.IN_PROGRESS for t in store.tasks.values()) == 2


async def test_tasks_offered_by_intake_are_claimed_by_id(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    dispatcher = await idle_dispatcher(store, metrics, running, slots=10)
    result = await store.insert_tasks([new_task(f"t{i}") for i in range(4)])
    dispatcher.offer(result.created)
    await eventually(lambda: dispatcher.outbox.qsize() == 4)

    claimed = [dispatcher.outbox.get_nowait() for _ in range(4)]
    assert [c.task_id for c in claimed] == [t.id for t in result.created]
    assert all(c.attempt == 1 for c in claimed)
    assert store.count("claim_new") == 1
    assert sample(metrics, "taskflow_status_changes_total", status="in_progress") == 4
    await asyncio.sleep(0.2)
    # At most one more search of the table, then it sleeps until woken or the next poll
    # (60 s): not a search per turn of its loop.
    assert store.count("claim") <= 2


async def test_tasks_offered_and_a_poll_together_never_exceed_the_free_slots(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = CountingStore(slots=3)
    await add_tasks(store, 5)  # waiting in the table, from another instance
    own = (await store.insert_tasks([new_task(f"own{i}") for i in range(2)])).created
    dispatcher = start_dispatcher(store, metrics, running, slots=3, poll_s=1.0)
    dispatcher.offer(own)  # created here while every processor was busy (before it runs)

    await eventually(dispatcher.outbox.full)
    claimed = {dispatcher.outbox.get_nowait().task_id for _ in range(3)}
    assert {t.id for t in own} <= claimed, "the offered tasks by id, one more from the table"
    assert [args[2] for op, args in store.calls if op == "claim"] == [1]
    assert store.most_outstanding == 3


async def test_a_wake_claims_a_task_another_instance_created_before_the_next_poll(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    dispatcher = await idle_dispatcher(store, metrics, running, slots=5)
    [task_id] = await add_tasks(store, 1)  # created elsewhere: its NOTIFY wakes this one
    dispatcher.wake()
    claim = await asyncio.wait_for(dispatcher.outbox.get(), 2)  # not after 60 s
    assert claim.task_id == task_id


async def test_an_expired_lease_is_claimed_again_as_a_new_attempt(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    [task_id] = await add_tasks(store, 1)
    [(first, _)] = await store.claim("instance-b", 30, 10)  # another instance, then it dies
    store.advance(31)

    dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=0.01)
    claim = await asyncio.wait_for(dispatcher.outbox.get(), 10)

    assert (claim.task_id, claim.attempt) == (task_id, first.attempt + 1)
    assert store.leases[task_id].owner == OWNER
    assert sample(metrics, "taskflow_lease_recoveries_total") == 1


@pytest.mark.parametrize("error", [StoreUnavailable("down"), StoreError("deadlock")])
async def test_a_failed_claim_is_retried(
    metrics: Metrics, running: list[asyncio.Task[None]], error: Exception
) -> None:
    store = MemoryStore()
    ids = await add_tasks(store, 3)
    store.fail("claim", error, error)
    dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=0.01)
    async with asyncio.timeout(10):
        claims = [await dispatcher.outbox.get() for _ in range(3)]
    assert sorted(c.task_id for c in claims) == sorted(ids)
    assert store.count("claim") >= 3


async def test_failed_claims_back_off_and_start_again_from_the_first_delay_after_a_success(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    await add_tasks(store, 1)
    store.fail("claim", StoreUnavailable("down"), StoreUnavailable("down"))
    with capture_logs() as logs:
        started = time.monotonic()
        dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=60)
        await asyncio.wait_for(dispatcher.outbox.get(), 10)
        waited = time.monotonic() - started
        store.fail("claim", StoreUnavailable("down again"))
        await add_tasks(store, 1)
        dispatcher.wake()
        await asyncio.wait_for(dispatcher.outbox.get(), 10)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "claim failed, retrying"]
    assert delays == [0.1, 0.2, 0.1]
    assert waited >= 0.3, "each retry waited its delay"


async def test_a_backlog_is_claimed_as_slots_free_not_at_the_next_poll(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    ids = await add_tasks(store, 20)
    attempts = Attempts(3)
    dispatcher = start_dispatcher(store, metrics, running, slots=3, poll_s=60, attempts=attempts)
    done: list[Claim] = []
    async with asyncio.timeout(5):  # the next poll is 60 s away
        while len(done) < 20:
            done.append(await dispatcher.outbox.get())
            attempts.free_slot()
    assert sorted(c.task_id for c in done) == sorted(ids)


async def test_cancelling_is_not_lost_when_a_wake_up_arrives_at_the_same_time(
    metrics: Metrics,
) -> None:
    """A wake-up (a NOTIFY) racing with the pipeline's cancel must not keep it running."""
    store = MemoryStore()
    dispatcher = Dispatcher(
        store, metrics, Attempts(5), owner=OWNER, lease_s=30, slots=5, poll_s=60
    )
    task = asyncio.create_task(dispatcher.run())
    await eventually(lambda: store.count("claim") == 1)
    for _ in range(5):
        await asyncio.sleep(0)  # now asleep until the next wake-up or poll

    dispatcher.wake()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:  # clean up before failing
        task.cancel()
    assert done, "the dispatcher ignored its cancellation"
    assert task.cancelled()


async def test_stop_takes_back_unstarted_claims_and_claims_no_more(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    store = MemoryStore()
    ids = await add_tasks(store, 3)
    attempts = Attempts(5)
    dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=0.01, attempts=attempts)
    await eventually(lambda: dispatcher.outbox.qsize() == 3)

    await dispatcher.stop_taking_work(grace(5))
    assert dispatcher.outbox.empty()
    assert sorted(attempts.held()) == sorted(ids)  # still held: the lease keeper hands them back

    await add_tasks(store, 2)
    calls = len(store.calls)
    dispatcher.wake()
    attempts.free_slot()
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(store.calls) == calls


async def test_stop_waits_for_a_claim_in_flight_and_takes_it_back(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    """A claim committed while stopping is handed back, not left to its lease."""
    store = MemoryStore()
    ids = await add_tasks(store, 2)
    store.hold("claim")
    attempts = Attempts(5)
    dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=0.01, attempts=attempts)
    await store.entered("claim")

    stopping = asyncio.create_task(dispatcher.stop_taking_work(grace(10)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done(), "stop_taking_work() did not wait for the claim in flight"
    store.let_go("claim")
    await asyncio.wait_for(stopping, 10)
    assert dispatcher.outbox.empty(), "a claim committed while stopping reached a processor"
    assert sorted(attempts.held()) == sorted(ids)


async def test_a_task_held_here_is_not_claimed_again_when_its_lease_ran_out(
    metrics: Metrics, running: list[asyncio.Task[None]]
) -> None:
    """A stalled attempt of this instance is not started a second time by this instance."""
    store = MemoryStore()
    [held_id] = await add_tasks(store, 1)
    [stalled] = await store.claim_new([held_id], OWNER, 30)
    attempts = Attempts(5)
    attempts.started(stalled)  # a processor here still runs it
    store.advance(31)
    [other_id] = await add_tasks(store, 1)

    dispatcher = start_dispatcher(store, metrics, running, slots=5, poll_s=0.01, attempts=attempts)
    claim = await asyncio.wait_for(dispatcher.outbox.get(), 10)
    await eventually(lambda: store.count("claim") >= 3)

    assert claim.task_id == other_id
    assert dispatcher.outbox.empty()
    assert store.tasks[held_id].attempts == 1


async def test_intake_creates_tasks_claimed_only_for_idle_processors_and_not_while_stopping(
    metrics: Metrics,
) -> None:
    attempts = Attempts(3)
    dispatcher = Dispatcher(MemoryStore(), metrics, attempts, owner=OWNER, lease_s=30, slots=3)
    reservation = dispatcher.reserve_for_created(5)
    assert reservation == CreateClaimed(OWNER, 30, 3)  # three idle processors: three of five
    assert dispatcher.reserve_for_created(1) is None  # every processor is reserved
    dispatcher.created_claimed(reservation, [])  # the batch failed: the slots come back
    assert attempts.free == 3

    await dispatcher.stop_taking_work(grace(5))
    assert dispatcher.reserve_for_created(1) is None  # stopping: tasks are created `new`
    assert attempts.free == 3
