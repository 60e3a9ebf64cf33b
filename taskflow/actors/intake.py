"""The intake actor: many concurrent creates become one INSERT (group commit).

Callers `submit()` a `NewTask` and wait for its commit. Creates gather in a bounded
`Batcher` while the previous batch is written. A full inbox answers `Overloaded` at
once; it never grows. When processors of this instance are idle, as many tasks of the
batch are created already claimed (`in_progress`, attempt 1, this instance's lease) and
go straight to them: one statement per task instead of an insert and a claim.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from taskflow.actors.batching import Batcher
from taskflow.actors.ports import PipelineStore
from taskflow.db.store import CreateClaimed, InsertResult
from taskflow.errors import (
    IdempotencyConflict,
    Overloaded,
    StoreError,
    StoreUnavailable,
    TaskflowError,
)
from taskflow.lifecycle import Actor, Grace, LoopSpec
from taskflow.metrics import Metrics
from taskflow.models import Claim, NewTask, Task

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to a create: the task, and whether this request created it."""

    task: Task
    created: bool


_Request = tuple[NewTask, "asyncio.Future[Accepted]"]


class ClaimOnCreate(Protocol):
    """Idle processors for tasks being created (the dispatcher has them)."""

    def reserve_for_created(self, count: int) -> CreateClaimed | None:
        """Slots for up to `count` tasks created claimed, or None."""

    def created_claimed(self, reservation: CreateClaimed, claims: Sequence[Claim]) -> None:
        """Release `reservation` and take the `claims` committed under it."""


class Intake(Actor):
    """Batches new tasks into PostgreSQL and hands the created ones to `on_created`.

    Stopping: `stop_taking_work()` refuses creates (`Overloaded`); `finish()` waits for
    the queued ones to be written (at most `grace.flush_s`).
    """

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        *,
        queue_size: int,
        on_created: Callable[[Sequence[Task]], None],
        claim_on_create: ClaimOnCreate | None = None,
        batch_max: int = 1000,
        submit_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._metrics = metrics
        self._inbox: Batcher[_Request] = Batcher(queue_size, batch_max)
        self._on_created = on_created
        self._claim_on_create = claim_on_create
        self._submit_timeout = submit_timeout
        self.accepting = True
        metrics.track_queue("intake", self._inbox.qsize, queue_size)

    async def submit(self, new: NewTask) -> Accepted:
        """Store `new` (or find the task its idempotency key names); raise on overload."""
        return await asyncio.shield(self.offer(new))

    def offer(self, new: NewTask) -> asyncio.Future[Accepted]:
        """Queue `new` and return the future of its answer, without waiting: what
        `submit()` returns or raises, for callers that settle by callback (the AMQP
        consumer: no task per message). Raises `Overloaded` at once when refused."""
        if not self.accepting:
            self._metrics.intake_rejected.labels("stopping").inc()
            raise Overloaded("taskflow is shutting down; retry on another instance")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        try:
            self._inbox.put_nowait((new, future))
        except asyncio.QueueFull:
            self._metrics.intake_rejected.labels("full").inc()
            raise Overloaded("the intake queue is full; retry later") from None
        # A timer that answers the future itself: cheaper than `wait_for` (a task and two
        # more futures per create). Not yet in a batch: now it never will be (a batch
        # skips answered creates). Already being written: the outcome is unknown, as with
        # any timeout; a retry with the same Idempotency-Key is safe.
        timer = loop.call_later(self._submit_timeout, self._expire, future)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    def _expire(self, future: asyncio.Future[Accepted]) -> None:
        if not future.done():
            self._metrics.intake_rejected.labels("timeout").inc()
            future.set_exception(Overloaded("the task was not committed in time; retry later"))

    def loops(self) -> Iterable[LoopSpec]:
        """One loop, writing batches until cancelled."""
        return [("intake", self.run())]

    async def run(self) -> None:
        """Write batches until cancelled."""
        await self._inbox.run(self._flush)

    async def _flush(self, batch: list[_Request]) -> None:
        live = [(new, fut) for new, fut in batch if not fut.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await self._insert([new for new, _ in live])
        except TaskflowError as exc:
            unreachable = isinstance(exc, StoreUnavailable)
            self._metrics.db_up.set(0 if unreachable else 1)
            log.warning("intake batch failed", size=len(live), error=str(exc))
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            if unreachable:
                self._fail_waiting(exc)
            return
        self._metrics.db_up.set(1)
        self._metrics.db_batch_size.labels("insert").observe(len(live))
        self._metrics.db_batch_seconds.labels("insert").observe(loop.time() - started)
        created = {task.id: task for task in result.created}
        by_source: Counter[str] = Counter()
        for new, fut in live:
            if fut.done():
                continue
            task = created.get(new.id)
            if task is not None:
                by_source[new.source.value] += 1
                log.info("task created", task_id=str(task.id), source=new.source.value)
                fut.set_result(Accepted(task, created=True))
                continue
            existing = result.existing.get(new.idempotency_key or "")
            if existing is None:  # not created and no task with its key: should not happen
                fut.set_exception(StoreError("the task was neither created nor found"))
                continue
            found, fingerprint = existing
            if fingerprint == new.fingerprint():
                fut.set_result(Accepted(found, created=False))
            else:
                fut.set_exception(
                    IdempotencyConflict(
                        "this idempotency key was used with a different body",
                        {"idempotency_key": new.idempotency_key, "task_id": str(found.id)},
                    )
                )
        for source, count in by_source.items():  # once per batch: labels() is not free
            self._metrics.tasks_created.labels(source).inc(count)
        self._metrics.status_changes.labels("new").inc(by_source.total())
        if len(result.claimed) < len(result.created):
            claimed = {claim.task_id for claim in result.claimed}
            self._on_created([task for task in result.created if task.id not in claimed])

    async def _insert(self, batch: list[NewTask]) -> InsertResult:
        """Insert `batch`, as many of them claimed as processors here are idle (while
        accepting: a task created during a shutdown stays `new`, for any instance)."""
        claimer = self._claim_on_create
        reservation = (
            claimer.reserve_for_created(len(batch))
            if claimer is not None and self.accepting
            else None
        )
        if reservation is None:
            return await self._store.insert_tasks(batch)
        assert claimer is not None
        claims: Sequence[Claim] = ()
        try:
            result = await self._store.insert_tasks(batch, reservation)
            claims = result.claimed
        finally:
            claimer.created_claimed(reservation, claims)
        return result

    def _fail_waiting(self, exc: TaskflowError) -> None:
        """Answer every create that queued behind a batch PostgreSQL did not take.

        They would fail the same way, one store timeout later each: during an outage a
        create gets its 503 within one timeout, however many wait. The next create
        tries PostgreSQL again.
        """
        for _, fut in self._inbox.take_waiting():
            if not fut.done():
                fut.set_exception(exc)

    async def stop_taking_work(self, grace: Grace) -> None:
        """Refuse creates from now on (`Overloaded`, counted as `stopping`)."""
        self.accepting = False

    async def finish(self, grace: Grace) -> None:
        """Wait (at most `grace.flush_s`) for queued creates to be written, then stop."""
        self.accepting = False
        if not await self._inbox.join(grace.flush_s):
            log.warning("intake did not drain in time", waiting=self._inbox.qsize())
        await self.cancel_loops()
