"""The pipeline: builds the actors, runs them as named tasks, supervises and stops them.

Supervision is one `FIRST_COMPLETED` wait over every actor task: an actor that ends
(it only ends by crashing) is logged and makes the pipeline not alive, and `on_failure`
is called so the process can stop instead of running without that actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from taskflow.actors.dispatcher import Dispatcher
from taskflow.actors.intake import Accepted, Intake
from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.actors.ports import PipelineStore
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.config import Settings
from taskflow.errors import TaskflowError
from taskflow.metrics import Metrics
from taskflow.models import NewTask

log = structlog.get_logger(__name__)

# How long stop() waits for cancelled actors to end: a bound, not an expected duration.
STOP_TIMEOUT_S = 10.0


class Pipeline:
    """Intake → dispatcher → processors → status writer, for one instance (`owner`)."""

    def __init__(
        self,
        store: PipelineStore,
        settings: Settings,
        metrics: Metrics,
        *,
        owner: str | None = None,
        poll_s: float = 1.0,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.owner = owner or f"taskflow-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._settings = settings
        self._on_failure = on_failure
        self.dispatcher = Dispatcher(
            store,
            metrics,
            owner=self.owner,
            lease_s=settings.lease_s,
            slots=settings.processors,
            poll_s=poll_s,
        )
        self.writer = StatusWriter(store, metrics, owner=self.owner, capacity=settings.processors)
        self.processors = ProcessorPool(
            self.dispatcher.outbox,
            self.writer,
            metrics,
            size=settings.processors,
            work_min_s=settings.work_min_s,
            work_max_s=settings.work_max_s,
            failure_rate=settings.failure_rate,
            on_done=self.dispatcher.slot_freed,
        )
        self.intake = Intake(
            store, metrics, queue_size=settings.queue_size, on_created=self.dispatcher.offer
        )
        self.lease_keeper = LeaseKeeper(
            store,
            metrics,
            owner=self.owner,
            lease_s=settings.lease_s,
            held=self.processors.in_flight.keys,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._processor_tasks: list[asyncio.Task[None]] = []
        self._monitor: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._stopping = False

    async def submit(self, new: NewTask) -> Accepted:
        """Create a task (or find the one its idempotency key names), committed on return."""
        return await self.intake.submit(new)

    def wake(self) -> None:
        """Tell the dispatcher that tasks may be waiting (a NOTIFY from another instance)."""
        self.dispatcher.wake()

    @property
    def alive(self) -> bool:
        """True while every actor runs."""
        return self._monitor is not None and self.failure is None and not self._monitor.done()

    def start(self, extra: Mapping[str, Coroutine[Any, Any, None]] | None = None) -> None:
        """Start every actor (and the `extra` loops, by name) as supervised named tasks."""
        create = asyncio.create_task
        # Every event an actor logs names this instance, the `lease_owner` of its claims,
        # so one task can be followed across instances (tasks copy the context they start in).
        with structlog.contextvars.bound_contextvars(instance=self.owner):
            self._tasks = [
                *(create(coro, name=name) for name, coro in (extra or {}).items()),
                create(self.intake.run(), name="intake"),
                create(self.dispatcher.run(), name="dispatcher"),
                create(self.writer.run(), name="status-writer"),
                create(self.lease_keeper.run(), name="lease-keeper"),
            ]
            self._processor_tasks = [
                create(self.processors.run(i), name=f"processor-{i}")
                for i in range(self.processors.size)
            ]
            self._monitor = create(self._supervise(), name="pipeline-monitor")
        log.info("pipeline started", owner=self.owner, processors=self.processors.size)

    async def _supervise(self) -> None:
        everything = self._tasks + self._processor_tasks
        done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        if self._stopping:
            return
        dead = done.pop()
        error = None if dead.cancelled() else dead.exception()
        self.failure = error or RuntimeError(f"actor {dead.get_name()} stopped")
        log.critical(
            "actor died, pipeline stopped", actor=dead.get_name(), error=repr(error), exc_info=error
        )
        if self._on_failure is not None:
            self._on_failure(error)

    async def stop(self, grace_s: float) -> None:
        """Drain: stop intake, let attempts finish for `grace_s`, hand back the rest, flush."""
        self._stopping = True
        log.info("pipeline stopping", grace_s=grace_s)
        await self.intake.drain(timeout=max(grace_s, 1.0))
        unstarted = await self.dispatcher.stop(timeout=max(grace_s, 1.0))
        finished = await self.processors.wait_idle(grace_s)
        running = list(self.processors.in_flight)
        for task in self._processor_tasks:
            task.cancel()
        await asyncio.gather(*self._processor_tasks, return_exceptions=True)
        handed_back = [c.task_id for c in unstarted] + running
        await self.writer.drain(timeout=max(grace_s, 1.0))
        if handed_back:
            with contextlib.suppress(TaskflowError):
                await self._store.release(handed_back, self.owner)
        everything = [*self._tasks, *([self._monitor] if self._monitor else [])]
        for task in everything:
            task.cancel()
        if everything:
            _, stuck = await asyncio.wait(everything, timeout=STOP_TIMEOUT_S)
            if stuck:
                log.error("actors ignored cancellation", actors=[t.get_name() for t in stuck])
        log.info("pipeline stopped", all_finished=finished, handed_back=len(handed_back))
