"""The instances registry: each instance records itself in PostgreSQL and heartbeats.

Every `interval_s` seconds an instance upserts its row (processors, busy processors,
intake queue depth) and a sample of the status changes it committed since its previous
heartbeat, read from its own Prometheus counters. `GET /stats` lists the instances seen
within three heartbeats and sums the samples of the last minute into rates, so neither
depends on how many tasks are stored. Rows of instances gone for `FORGET_AFTER_S` are
deleted by the heartbeats of the others; a stopping instance deletes its own.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client.metrics import MetricWrapperBase

from taskflow.actors.pipeline import Pipeline
from taskflow.db.dashboard import RATE_KINDS, Heartbeat
from taskflow.errors import TaskflowError
from taskflow.metrics import Metrics

log = structlog.get_logger(__name__)

HEARTBEAT_S = 5.0
MISSED_HEARTBEATS = 3  # an instance silent for this many heartbeats is not listed
FORGET_AFTER_S = 600.0  # ...and its row is deleted after this long
KEEP_SAMPLES_S = 1200.0  # the chart shows 15 minutes


def _value(metric: MetricWrapperBase, sample: str, **labels: str) -> float:
    """The value of one sample of `metric` (0 while it has none).

    Only `metric` is collected. `registry.get_sample_value` collects every metric of the
    registry, process collector included, for each value it returns: nine times per
    heartbeat, a pause of the event loop that grows with the number of label values.
    """
    for family in metric.collect():
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0


def committed_changes(metrics: Metrics) -> dict[str, float]:
    """This instance's status changes so far, by rate kind, from its own counters.

    A running attempt that is cancelled is written by the status writer (a status change
    `cancelled`); a `new` task cancelled through this instance's API is counted by the
    control routes (`taskflow_cancels_total{outcome="cancelled"}`): both are cancellations.
    """
    changes = {
        "created": sum(
            _value(metrics.tasks_created, "taskflow_tasks_created_total", source=source)
            for source in ("http", "amqp")
        ),
        **{
            kind: _value(metrics.status_changes, "taskflow_status_changes_total", status=kind)
            for kind in RATE_KINDS
            if kind != "created"
        },
    }
    changes["cancelled"] += _value(metrics.cancels, "taskflow_cancels_total", outcome="cancelled")
    return changes


class RegistryStore(Protocol):
    """What the registry needs of PostgreSQL (`DashboardStore` in production)."""

    async def heartbeat(self, beat: Heartbeat, forget_after_s: float, keep_s: float) -> int:
        """Record `beat`; return how many long-gone instances were deleted."""
        ...

    async def deregister(self, instance_id: str) -> None:
        """Remove an instance."""
        ...


class InstanceRegistry:
    """Keeps this instance's row in the registry fresh until stopped."""

    def __init__(
        self,
        store: RegistryStore,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        queue_capacity: int,
        interval_s: float = HEARTBEAT_S,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._metrics = metrics
        self._queue_capacity = queue_capacity
        self.interval_s = interval_s
        self.started_at = datetime.now(UTC)
        self._last_counts = committed_changes(metrics)
        self._last_beat = time.monotonic()

    @property
    def instance_id(self) -> str:
        """This instance's id in the registry: its pipeline's `lease_owner` name."""
        return self._pipeline.owner

    @property
    def stale_after_s(self) -> float:
        """How old a heartbeat may be for its instance to be listed as live."""
        return self.interval_s * MISSED_HEARTBEATS

    def _beat(self) -> tuple[Heartbeat, float, dict[str, float]]:
        now = time.monotonic()
        counts = committed_changes(self._metrics)
        changes = {k: int(counts[k] - self._last_counts[k]) for k in RATE_KINDS}
        seconds = now - self._last_beat
        depth = _value(self._metrics.queue_depth, "taskflow_queue_depth", queue="intake")
        beat = Heartbeat(
            instance_id=self._pipeline.owner,
            started_at=self.started_at,
            processors=self._pipeline.processors.size,
            busy=max(self._pipeline.processors.size - self._pipeline.attempts.free, 0),
            queue_depth=int(depth),
            queue_capacity=self._queue_capacity,
            seconds=seconds,
            changes=changes,
        )
        return beat, now, counts

    async def beat_once(self) -> None:
        """Send one heartbeat; the changes it reports are forgotten only once it is stored."""
        beat, now, counts = self._beat()
        gone = await self._store.heartbeat(beat, FORGET_AFTER_S, KEEP_SAMPLES_S)
        self._last_beat, self._last_counts = now, counts
        if gone:
            log.info("dashboard.instances_forgotten", count=gone)

    async def run(self) -> None:
        """Heartbeat every `interval_s` seconds until cancelled; PostgreSQL errors are
        logged and the next heartbeat tries again (the changes carry over)."""
        while True:
            try:
                await self.beat_once()
            except TaskflowError as exc:
                log.warning("dashboard.heartbeat_failed", instance=self.instance_id, error=str(exc))
            await asyncio.sleep(self.interval_s)

    async def deregister(self) -> None:
        """Remove this instance from the registry (it is stopping)."""
        try:
            await self._store.deregister(self._pipeline.owner)
        except TaskflowError as exc:
            log.warning("dashboard.deregister_failed", instance=self.instance_id, error=str(exc))


REGISTRY = web.AppKey("instance_registry", InstanceRegistry)
