"""The pipeline: builds the actors, runs them as named tasks, supervises and stops them.

Supervision is one `FIRST_COMPLETED` wait over every actor task: an actor that ends
(it only ends by crashing) is logged and makes the pipeline not alive, and `on_failure`
is called so the process can stop instead of running without that actor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping
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
from taskflow.models import Claim, NewTask

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
            running=self._running,
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
        self._grace_ends: float | None = None
        self._unstarted: list[Claim] = []

    def _running(self) -> Collection[uuid.UUID]:
        return self.processors.in_flight.keys()

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

    async def begin_shutdown(self, grace_s: float) -> None:
        """Take no more work: refuse creates, claim nothing more. Starts the grace period.

        Called as soon as the process is told to stop (aiohttp's `on_shutdown`), before
        in-flight HTTP requests are waited for; `stop()` calls it too. Idempotent.
        """
        if self._grace_ends is not None:
            return
        self._grace_ends = asyncio.get_running_loop().time() + grace_s
        self.intake.accepting = False
        log.info("shutdown begun: intake stopped", grace_s=grace_s)
        self._unstarted = await self.dispatcher.stop(timeout=max(grace_s, 1.0))

    async def stop(self, grace_s: float) -> None:
        """Drain: stop intake, let attempts finish for `grace_s`, hand back the rest, flush.

        The grace period counts from `begin_shutdown()`. Queued creates are still
        written; tasks created but not claimed stay `new` for any instance to take.
        Attempts still working when it ends are abandoned and handed back (their lease
        ends now); outcomes already produced are committed first.
        """
        self._stopping = True
        await self.begin_shutdown(grace_s)
        assert self._grace_ends is not None
        log.info("pipeline stopping", grace_s=grace_s)
        await self.intake.drain(timeout=max(grace_s, 1.0))
        unstarted = self._unstarted + self.dispatcher.drain_unstarted()
        left_s = max(self._grace_ends - asyncio.get_running_loop().time(), 0.0)
        finished = await self.processors.wait_idle(left_s)
        self.processors.abandon()
        if not await self.processors.wait_idle(max(grace_s, 1.0)):
            log.warning("outcomes not committed in time; their attempts are handed back")
        running = [c.task_id for c in self.processors.abandoned]
        running += list(self.processors.in_flight)
        for task in self._processor_tasks:
            task.cancel()
        await asyncio.gather(*self._processor_tasks, return_exceptions=True)
        await self.writer.drain(timeout=max(grace_s, 1.0))
        handed_back: set[uuid.UUID] = set()
        if unstarted or running:
            try:
                handed_back = await self._store.release(
                    [c.task_id for c in unstarted] + running, self.owner
                )
            except TaskflowError as exc:
                log.warning(
                    "could not hand attempts back; their leases will run out", error=str(exc)
                )
        everything = [*self._tasks, *([self._monitor] if self._monitor else [])]
        for task in everything:
            task.cancel()
        if everything:
            _, stuck = await asyncio.wait(everything, timeout=STOP_TIMEOUT_S)
            if stuck:
                log.error("actors ignored cancellation", actors=[t.get_name() for t in stuck])
        log.info("pipeline stopped", all_finished=finished, handed_back=len(handed_back))
