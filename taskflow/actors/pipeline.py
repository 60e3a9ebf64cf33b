"""The pipeline: builds the actors, runs them as named tasks, supervises and stops them.

Supervision is one `FIRST_COMPLETED` wait over every actor task: an actor that ends
(it only ends by crashing) is logged and makes the pipeline not alive, and `on_failure`
is called so the process can stop instead of running without that actor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import structlog

from taskflow.actors.attempts import Attempts
from taskflow.actors.dispatcher import Dispatcher
from taskflow.actors.intake import Accepted, Intake
from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.actors.ports import PipelineStore
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.config import Settings
from taskflow.lifecycle import Actor, Grace, Loop, cancel_and_wait
from taskflow.metrics import Metrics
from taskflow.models import NewTask

log = structlog.get_logger(__name__)


class Pipeline:
    """Intake → dispatcher → processors → status writer, for one instance (`owner`).

    The actors share one `Attempts` (the attempts held here and the free processor
    slots) and otherwise only hand data downstream: intake offers created tasks to the
    dispatcher, whose outbox is the processors' inbox, who hand outcomes to the writer.
    Every actor has the same lifecycle (`taskflow.lifecycle`), so starting and stopping
    is one call per actor, in data-flow order.
    """

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
        self._on_failure = on_failure
        self.attempts = Attempts(settings.processors)
        self.dispatcher = Dispatcher(
            store,
            metrics,
            self.attempts,
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
            self.attempts,
            size=settings.processors,
            work_min_s=settings.work_min_s,
            work_max_s=settings.work_max_s,
            failure_rate=settings.failure_rate,
        )
        self.intake = Intake(
            store,
            metrics,
            queue_size=settings.queue_size,
            on_created=self.dispatcher.offer,
            claim_on_create=self.dispatcher,
        )
        self.lease_keeper = LeaseKeeper(
            store, metrics, self.attempts, owner=self.owner, lease_s=settings.lease_s
        )
        # In the order of a shutdown: what feeds work stops first, what holds leases last.
        self._actors: list[Actor] = [
            self.intake,
            self.dispatcher,
            self.processors,
            self.writer,
            self.lease_keeper,
        ]
        self._monitor: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._stopping = False
        self._grace: Grace | None = None
        self._took_work = asyncio.Event()  # set once every actor stopped taking work

    async def submit(self, new: NewTask) -> Accepted:
        """Create a task (or find the one its idempotency key names), committed on return."""
        return await self.intake.submit(new)

    def offer(self, new: NewTask) -> asyncio.Future[Accepted]:
        """`submit()` without waiting: the future of its answer (`Intake.offer`)."""
        return self.intake.offer(new)

    def wake(self) -> None:
        """Tell the dispatcher that tasks may be waiting (a NOTIFY from another instance)."""
        self.dispatcher.wake()

    @property
    def alive(self) -> bool:
        """True while every actor runs."""
        return self._monitor is not None and self.failure is None and not self._monitor.done()

    @property
    def accepting(self) -> bool:
        """True while intake takes new tasks (false once a shutdown has begun)."""
        return self.intake.accepting

    def start(self, extra: Mapping[str, Coroutine[Any, Any, None]] | None = None) -> None:
        """Start every actor (and the `extra` loops, by name) as supervised named tasks."""
        self._actors += [Loop(name, coro) for name, coro in (extra or {}).items()]
        # Every event an actor logs names this instance, the `lease_owner` of its claims,
        # so one task can be followed across instances (tasks copy the context they start in).
        with structlog.contextvars.bound_contextvars(instance=self.owner):
            for actor in self._actors:
                actor.start()
            self._monitor = asyncio.create_task(self._supervise(), name="pipeline-monitor")
        log.info("pipeline started", owner=self.owner, processors=self.processors.size)

    async def _supervise(self) -> None:
        everything = [task for actor in self._actors for task in actor.tasks]
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
        if self._grace is not None:
            await self._took_work.wait()  # bounded: each step below is
            return
        self._grace = grace = Grace.starting_now(grace_s)
        try:
            await self.intake.stop_taking_work(grace)
            log.info("shutdown begun: intake stopped", grace_s=grace_s)
            for actor in self._actors[1:]:
                await actor.stop_taking_work(grace)
        finally:
            self._took_work.set()

    async def stop(self, grace_s: float) -> None:
        """Drain: stop intake, let attempts finish for `grace_s`, hand back the rest, flush.

        The grace period counts from `begin_shutdown()`. In order: queued creates are
        written (tasks created but not claimed stay `new` for any instance to take); the
        dispatcher's unstarted claims are taken back; attempts still working when the
        grace ends are abandoned; outcomes already produced are committed; then every
        attempt still held is handed back (its lease ends now).
        """
        self._stopping = True
        await self.begin_shutdown(grace_s)
        assert self._grace is not None
        log.info("pipeline stopping", grace_s=grace_s)
        for actor in self._actors:
            await actor.finish(self._grace)
        if self._monitor is not None:
            await cancel_and_wait([self._monitor])
        log.info(
            "pipeline stopped",
            all_finished=self.processors.all_finished,
            handed_back=self.lease_keeper.handed_back,
        )
