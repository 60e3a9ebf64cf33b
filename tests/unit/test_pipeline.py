"""The whole pipeline against the in-memory store: processing, stopping, supervision."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from taskflow.actors.pipeline import Pipeline
from taskflow.config import Settings
from taskflow.metrics import Metrics
from taskflow.models import Status
from tests.unit.helpers import eventually, new_task
from tests.unit.memory_store import MemoryStore

FAST = replace(Settings(), processors=4, work_min_s=0, work_max_s=0, failure_rate=0.0)
SLOW = replace(FAST, work_min_s=3600, work_max_s=3600)  # attempts that never end by themselves

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def make_pipeline(store: MemoryStore) -> AsyncIterator[MakePipeline]:
    """Build pipelines on `store`; any still running are stopped when the test ends."""
    built: list[Pipeline] = []

    def make(settings: Settings = FAST, **kwargs: object) -> Pipeline:
        pipeline = Pipeline(store, settings, Metrics(), poll_s=0.01, **kwargs)  # type: ignore[arg-type]
        built.append(pipeline)
        return pipeline

    yield make
    for pipeline in built:
        if pipeline.alive:
            await asyncio.wait_for(pipeline.stop(grace_s=0.1), 30)


def held_by(store: MemoryStore, owner: str) -> set[uuid.UUID]:
    """Tasks `owner` holds an unexpired lease on."""
    return {
        task_id
        for task_id, lease in store.leases.items()
        if lease.owner == owner
        and lease.expires_at >= store.now
        and store.tasks[task_id].status is Status.IN_PROGRESS
    }


@pytest.mark.parametrize(("rate", "status"), [(0.0, Status.COMPLETED), (1.0, Status.FAILED)])
async def test_every_task_submitted_is_processed(
    store: MemoryStore, make_pipeline: MakePipeline, rate: float, status: Status
) -> None:
    pipeline = make_pipeline(replace(FAST, failure_rate=rate))
    pipeline.start()
    accepted = await asyncio.wait_for(
        asyncio.gather(*(pipeline.submit(new_task(f"t{i}")) for i in range(50))), 10
    )
    ids = [a.task.id for a in accepted]
    await eventually(lambda: all(store.tasks[i].status.terminal for i in ids))
    for task_id in ids:
        assert store.tasks[task_id].status is status
        assert [s for s, _ in store.history(task_id)] == [Status.NEW, Status.IN_PROGRESS, status]
    assert pipeline.alive
    await pipeline.stop(grace_s=1)
    assert not pipeline.alive
    assert store.count("release") == 0  # nothing was left to hand back
    assert asyncio.all_tasks() == {asyncio.current_task()}, "a loop outlived stop()"


async def test_stop_hands_back_the_attempts_still_running(
    store: MemoryStore, make_pipeline: MakePipeline
) -> None:
    pipeline = make_pipeline(SLOW)
    pipeline.start()
    await asyncio.gather(*(pipeline.submit(new_task(f"t{i}")) for i in range(6)))
    await eventually(lambda: len(pipeline.attempts.held()) == 4)
    running = set(pipeline.attempts.held())

    await asyncio.wait_for(pipeline.stop(grace_s=0.05), 30)

    [(_, (released, owner))] = [c for c in store.calls if c[0] == "release"]
    assert set(released) == running
    assert owner == pipeline.owner
    assert held_by(store, pipeline.owner) == set()
    # Any instance takes them over at once, as new attempts; the unclaimed two are still new.
    retaken = await store.claim("instance-b", 30, 10)
    assert {c.task_id for c, _ in retaken} >= running
    assert all(recovered for c, recovered in retaken if c.task_id in running)
    assert asyncio.all_tasks() == {asyncio.current_task()}, "a loop outlived stop()"


async def test_stop_hands_back_a_claim_committed_while_stopping(
    store: MemoryStore, make_pipeline: MakePipeline
) -> None:
    """The claim was in PostgreSQL's hands when SIGTERM came: it must not wait for its lease."""
    await store.insert_tasks([new_task(f"t{i}") for i in range(3)])
    store.hold("claim")
    pipeline = make_pipeline(FAST)
    pipeline.start()
    await store.entered("claim")

    stopping = asyncio.create_task(pipeline.stop(grace_s=5))
    done, _ = await asyncio.wait([stopping], timeout=0.2)
    store.let_go("claim")
    await asyncio.wait_for(stopping, 30)

    assert all(store.tasks[i].attempts == 1 for i in store.tasks), "the claim took effect"
    assert held_by(store, pipeline.owner) == set(), "claims left to wait for their lease"
    assert not done, "stop() finished while a claim was still in flight"


async def test_the_monitor_notices_a_dead_actor(
    store: MemoryStore, make_pipeline: MakePipeline
) -> None:
    failures: list[BaseException | None] = []
    pipeline = make_pipeline(on_failure=failures.append)
    store.fail("claim", RuntimeError("a bug in the dispatcher"))
    pipeline.start()

    await eventually(lambda: not pipeline.alive)
    await eventually(lambda: bool(failures))
    assert isinstance(failures[0], RuntimeError)
    assert pipeline.failure is failures[0]
    await asyncio.wait_for(pipeline.stop(grace_s=0.1), 30)


async def test_an_extra_loop_is_supervised_too(make_pipeline: MakePipeline) -> None:
    failures: list[BaseException | None] = []
    pipeline = make_pipeline(on_failure=failures.append)

    async def listener() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("lost")

    async def quits() -> None:
        return

    pipeline.start({"notify-listener": listener()})
    await eventually(lambda: bool(failures))
    assert not pipeline.alive
    assert isinstance(failures[0], ConnectionError)
    await asyncio.wait_for(pipeline.stop(grace_s=0.1), 30)

    other = make_pipeline(on_failure=failures.append)
    other.start({"statistics": quits()})
    await eventually(lambda: len(failures) == 2)
    assert failures[1] is None  # it ended without an error, which an actor never should
    assert isinstance(other.failure, RuntimeError)
    assert not other.alive
    await asyncio.wait_for(other.stop(grace_s=0.1), 30)


async def test_a_stopping_pipeline_is_not_reported_as_failed(
    make_pipeline: MakePipeline,
) -> None:
    failures: list[BaseException | None] = []
    pipeline = make_pipeline(on_failure=failures.append)
    pipeline.start()
    await asyncio.wait_for(pipeline.stop(grace_s=0.1), 30)
    assert failures == []
    assert pipeline.failure is None


async def test_an_idle_pipeline_stops_at_once_whatever_its_grace(
    store: MemoryStore, make_pipeline: MakePipeline
) -> None:
    """The grace bounds work still running; with none, stop() does not wait it out."""
    never_worked = make_pipeline()
    never_worked.start()
    await asyncio.wait_for(never_worked.stop(grace_s=60), 10)

    worked = make_pipeline()
    worked.start()
    accepted = await worked.submit(new_task("one"))
    await eventually(lambda: store.tasks[accepted.task.id].status.terminal)
    await asyncio.wait_for(worked.stop(grace_s=60), 10)
    assert asyncio.all_tasks() == {asyncio.current_task()}, "a loop outlived stop()"
