"""The processor pool: each processor runs one attempt at a time, emulating the work.

An attempt is already `in_progress` in PostgreSQL when a processor gets it (the claim
wrote that). The processor waits a random time, picks the outcome, and waits for the
status writer to commit it. Each step is logged with the task id, attempt and source.

Each attempt is recorded in the shared `Attempts`: started, its slot freed once the
outcome is handed over, ended once the outcome is committed (or fenced off, or refused).

A cancel of an attempt (see `Attempts.request_cancel`) cancels the asyncio future of that
attempt's work only; the processor then writes the outcome `cancelled`, fenced by the
attempt number like any other outcome.

At shutdown, `finish()` lets the attempts work until the grace ends, then abandons those
still working (they stay held in `Attempts`, and the lease keeper hands them back); an
attempt whose outcome is already with the status writer is not cut short, so every
outcome that gets committed is also logged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable

import structlog

from taskflow.actors.attempts import Attempts
from taskflow.actors.status_writer import StatusWriter
from taskflow.errors import TaskflowError
from taskflow.lifecycle import Actor, Grace, LoopSpec
from taskflow.metrics import Metrics
from taskflow.models import Claim, Outcome, Status

log = structlog.get_logger(__name__)


class _Slot:
    """Frees a processor's slot once, and only once, per attempt."""

    __slots__ = ("_on_free",)

    def __init__(self, on_free: Callable[[], None]) -> None:
        self._on_free: Callable[[], None] | None = on_free

    def free(self) -> None:
        if self._on_free is not None:
            on_free, self._on_free = self._on_free, None
            on_free()


class ProcessorPool(Actor):
    """`size` processors sharing one bounded inbox of claims.

    A processor frees its slot in `attempts` once per attempt, as soon as it can take
    another claim: when the outcome is handed to the status writer (or the attempt ended
    some other way). The attempt stays held, and the pool not idle, until the outcome is
    committed.
    """

    def __init__(
        self,
        inbox: asyncio.Queue[Claim],
        writer: StatusWriter,
        metrics: Metrics,
        attempts: Attempts,
        *,
        size: int,
        work_min_s: float,
        work_max_s: float,
        failure_rate: float,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._inbox = inbox
        self._writer = writer
        self._metrics = metrics
        self.size = size
        self._work = (work_min_s, work_max_s)
        self._failure_rate = failure_rate
        self._attempts = attempts
        self._rng = rng or random.Random()
        # The histogram child per outcome, looked up once (`labels()` is not free).
        self._durations = {
            status: metrics.processing_seconds.labels(status.value)
            for status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
        }
        self.all_finished: bool | None = None  # set by finish(): no attempt was abandoned
        self._abandon = asyncio.Event()
        self._working: set[asyncio.Future[None]] = set()  # the work of running attempts
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.processors_busy.set_function(lambda: self._busy)

    def loops(self) -> Iterable[LoopSpec]:
        """One loop per processor."""
        return [(f"processor-{i}", self.run(i)) for i in range(self.size)]

    async def run(self, index: int) -> None:
        """The loop of processor number `index`: one attempt after another, until cancelled."""
        # Each processor is its own asyncio task with its own context: `actor` is bound
        # once for its lifetime, the attempt's keys per attempt (see `_attempt`).
        structlog.contextvars.bind_contextvars(actor=f"processor-{index}")
        while True:
            claim = await self._inbox.get()
            self._attempts.started(claim)
            self._busy += 1
            self._idle.clear()
            slot = _Slot(self._attempts.free_slot)
            try:
                if await self._attempt(claim, slot):
                    self._attempts.ended(claim)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()
                slot.free()

    async def _attempt(self, claim: Claim, slot: _Slot) -> bool:
        """Run one attempt; True when it is over, False when abandoned (still held)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # bind + reset rather than bound_contextvars(): the same context for every log
        # line of the attempt, without reading the whole context and re-binding it
        # (a quarter of the service's CPU when draining at 2,000 processors).
        tokens = structlog.contextvars.bind_contextvars(
            task_id=str(claim.task_id), attempt=claim.attempt, source=claim.source.value
        )
        try:
            log.info("status changed", status=Status.IN_PROGRESS.value)
            low, high = self._work
            work_s = self._rng.uniform(low, high) if high > 0 else 0.0
            if work_s > 0:
                await self._work_on(claim, work_s)
            if self._abandon.is_set():
                log.info("attempt abandoned at shutdown, to be handed back")
                return False
            cancel_requested_at = self._attempts.worked(claim)
            if cancel_requested_at is not None:
                outcome = Outcome(claim, Status.CANCELLED)
            elif self._rng.random() < self._failure_rate:
                outcome = Outcome(claim, Status.FAILED, error="emulated processing failure")
            else:
                outcome = Outcome(claim, Status.COMPLETED, result={"work_s": round(work_s, 3)})
            # The work is done: let the dispatcher claim this processor's next task while
            # the outcome is being committed (the claim waits in the bounded inbox until
            # then), so claims and outcome writes overlap instead of alternating.
            slot.free()
            try:
                written = await self._writer.write(outcome)
            except TaskflowError as exc:
                # PostgreSQL refused the batch for good. The lease is no longer renewed,
                # so the task gets a new attempt; this processor carries on.
                log.error("outcome not written; the task will be attempted again", error=str(exc))
                return True
            if written:
                duration = loop.time() - started
                self._durations[outcome.status].observe(duration)
                log.info(
                    "status changed", status=outcome.status.value, duration_s=round(duration, 4)
                )
                if cancel_requested_at is not None:
                    # Request (PostgreSQL's clock) to committed stop (ours): same machine
                    # or NTP-synchronised ones; a skew below zero counts as zero.
                    latency = max(time.time() - cancel_requested_at, 0.0)
                    self._metrics.cancel_latency.observe(latency)
                    log.info("attempt cancelled", latency_s=round(latency, 4))
            else:
                log.warning(
                    "outcome fenced off: another attempt holds the task",
                    status=outcome.status.value,
                )
            return True
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _work_on(self, claim: Claim, work_s: float) -> None:
        """The attempt's (emulated) work: a future that a timer resolves after `work_s`.

        A cancel of the attempt cancels that future (asyncio cancellation of this
        attempt's work alone: the processor carries on); the shutdown's abandon resolves
        it early. A future and a timer per attempt, not a task: at thousands of attempts
        a second, a task and `asyncio.wait` per attempt cost 7 % of the capacity bench.
        """
        loop = asyncio.get_running_loop()
        work: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(work_s, _resolve, work)
        self._working.add(work)
        if self._abandon.is_set():
            _resolve(work)
        elif self._attempts.working(claim, work.cancel):
            work.cancel()  # cancelled before a processor took it
        try:
            await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this processor is being cancelled, not just the attempt's work
        finally:
            timer.cancel()
            self._working.discard(work)

    async def finish(self, grace: Grace) -> None:
        """Let attempts work until `grace.ends`, abandon the rest, wait for the commits.

        Abandoned attempts end with no outcome and stay held; attempts waiting for their
        outcome's commit get `grace.flush_s` more, and are cut off (still held) after it.
        """
        self.all_finished = await self.wait_idle(grace.left())
        self._abandon.set()
        for work in list(self._working):
            _resolve(work)
        if not await self.wait_idle(grace.flush_s):
            log.warning("outcomes not committed in time; their attempts are handed back")
        await self.cancel_loops()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until no attempt is running; True when idle."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _resolve(work: asyncio.Future[None]) -> None:
    """End the work of an attempt (its time is up, or it is abandoned), unless it ended."""
    if not work.done():
        work.set_result(None)
