"""The instances registry's heartbeat: what it reports, and that a failed one loses nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from taskflow.actors.pipeline import Pipeline
from taskflow.config import Settings
from taskflow.dashboard.registry import InstanceRegistry
from taskflow.db.dashboard import Heartbeat
from taskflow.errors import StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.models import NewTask, Source
from tests.unit.memory_store import MemoryStore


class RecordingStore:
    """Keeps every heartbeat; fails the next `failures` of them."""

    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []
        self.deregistered: list[str] = []
        self.failures = 0

    async def heartbeat(self, beat: Heartbeat, forget_after_s: float, keep_s: float) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is unreachable")
        self.beats.append(beat)
        return 0

    async def deregister(self, instance_id: str) -> None:
        self.deregistered.append(instance_id)


def registry(metrics: Metrics, store: RecordingStore) -> tuple[InstanceRegistry, Pipeline]:
    settings = replace(Settings(), processors=7, queue_size=33)
    pipeline = Pipeline(MemoryStore(), settings, metrics, owner="instance-a")
    return InstanceRegistry(store, pipeline, metrics, queue_capacity=33), pipeline


async def test_a_heartbeat_reports_the_instance_and_its_changes() -> None:
    metrics, store = Metrics(), RecordingStore()
    beats, pipeline = registry(metrics, store)
    metrics.tasks_created.labels("http").inc(3)
    metrics.tasks_created.labels("amqp").inc(2)
    metrics.status_changes.labels("completed").inc(4)
    metrics.status_changes.labels("failed").inc(1)
    metrics.status_changes.labels("cancelled").inc(1)  # a running attempt, cancelled
    metrics.cancels.labels("cancelled").inc(2)  # new tasks, cancelled by the API
    waiting = pipeline.offer(
        NewTask(title="waits", description=None, payload={}, source=Source.HTTP)
    )
    await beats.beat_once()
    (beat,) = store.beats
    assert beat.instance_id == "instance-a" == beats.instance_id
    assert (beat.processors, beat.busy, beat.queue_depth, beat.queue_capacity) == (7, 0, 1, 33)
    assert beat.changes == {"created": 5, "completed": 4, "failed": 1, "cancelled": 3}
    waiting.cancel()
    assert beat.seconds > 0

    metrics.status_changes.labels("completed").inc(2)
    await beats.beat_once()
    assert store.beats[-1].changes == {"created": 0, "completed": 2, "failed": 0, "cancelled": 0}


async def test_changes_of_a_failed_heartbeat_go_with_the_next_one() -> None:
    metrics, store = Metrics(), RecordingStore()
    beats, _ = registry(metrics, store)
    metrics.tasks_created.labels("http").inc(3)
    store.failures = 1
    with pytest.raises(StoreUnavailable):
        await beats.beat_once()
    metrics.tasks_created.labels("http").inc(1)
    await beats.beat_once()
    (beat,) = store.beats
    assert beat.changes["created"] == 4


async def test_deregister_names_this_instance() -> None:
    metrics, store = Metrics(), RecordingStore()
    beats, _ = registry(metrics, store)
    await beats.deregister()
    assert store.deregistered == ["instance-a"]
