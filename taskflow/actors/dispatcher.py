"""The dispatcher: claims tasks for idle processors and hands them over.

Two sources, one rule. Tasks this instance has just created arrive through `offer()` and
are claimed by id (no search). When that hand-off is empty, or every `poll_s`, the
dispatcher claims from PostgreSQL: `new` tasks from any instance and attempts whose lease
ran out. It never claims more than there are idle processors, so no lease ages in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Sequence

import structlog

from taskflow.actors.attempts import Attempts
from taskflow.actors.ports import PipelineStore
from taskflow.backoff import Backoff
from taskflow.db.store import CreateClaimed
from taskflow.errors import StoreUnavailable, TaskflowError
from taskflow.lifecycle import Actor, Grace, LoopSpec
from taskflow.metrics import Metrics
from taskflow.models import Claim, Task

log = structlog.get_logger(__name__)


class Dispatcher(Actor):
    """Feeds `outbox` (the processors' inbox) with claims, one per free slot of `attempts`.

    Every claim is registered in `attempts` (held from then on), and a task held there
    is never claimed again here, even when its lease ran out meanwhile.

    Stopping: `stop_taking_work()` claims nothing more, waits (at most `grace.flush_s`)
    for a claim already sent to PostgreSQL — once committed it holds a lease, which would
    otherwise only be picked up when it ran out — and takes back the claims no processor
    has started. They stay held in `attempts`, for the lease keeper to hand back.
    """

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        attempts: Attempts,
        *,
        owner: str,
        lease_s: float,
        slots: int,
        poll_s: float = 1.0,
        batch_max: int = 1000,
    ) -> None:
        super().__init__()
        self._store = store
        self._attempts = attempts
        self._metrics = metrics
        self._owner = owner
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._batch_max = batch_max
        self.outbox: asyncio.Queue[Claim] = asyncio.Queue(slots)
        self._handoff: asyncio.Queue[uuid.UUID] = asyncio.Queue(slots)
        self._wake = asyncio.Event()
        self._claiming = True
        self._between_calls = asyncio.Event()  # clear while a claim is with PostgreSQL
        self._between_calls.set()
        metrics.track_queue("dispatch", self._handoff.qsize, slots)
        metrics.track_queue("processors", self.outbox.qsize, slots)

    def offer(self, tasks: Sequence[Task]) -> None:
        """Take tasks this instance just created; those that do not fit are claimed later."""
        for task in tasks:
            try:
                self._handoff.put_nowait(task.id)
            except asyncio.QueueFull:
                break
        self._wake.set()

    def wake(self) -> None:
        """Look for work now (a task was created somewhere)."""
        self._wake.set()

    def loops(self) -> Iterable[LoopSpec]:
        """One loop, claiming until cancelled."""
        return [("dispatcher", self.run())]

    async def run(self) -> None:
        """Claim and hand over until cancelled; store errors back off and retry."""
        loop = asyncio.get_running_loop()
        last_poll = -float("inf")
        backoff = Backoff(0.1, 5.0)
        while True:
            free = await self._attempts.wait_free()
            if not self._claiming:
                await loop.create_future()  # parked until finish() cancels this loop
            want = self._attempts.reserve(min(free, self._batch_max))
            if want == 0:  # intake took them for tasks it creates claimed
                continue
            ids = [self._handoff.get_nowait() for _ in range(min(want, self._handoff.qsize()))]
            claims: list[Claim] = []
            room, polled = want, False
            failure: TaskflowError | None = None
            self._between_calls.clear()
            try:
                if ids:
                    claims += await self._claim_new(ids)
                room = want - len(claims)
                polling = not ids or loop.time() - last_poll >= self._poll_s
                if room > 0 and polling and self._claiming:
                    self._wake.clear()
                    claims += await self._claim(room)
                    last_poll, polled = loop.time(), True
            except TaskflowError as exc:
                failure = exc
            finally:
                self._between_calls.set()
            # Whatever was claimed before a failure holds a lease: register it too. Once
            # stopping, it is not handed to a processor (no attempt starts after that).
            self._attempts.unreserve(want)
            self._hand_over(claims)
            if failure is not None:
                self._metrics.db_up.set(0 if isinstance(failure, StoreUnavailable) else 1)
                log.warning("claim failed, retrying", error=str(failure), retry_in_s=backoff.delay)
                await backoff.sleep()
                continue
            backoff.reset()
            if polled and len(claims) < room and self._handoff.empty():
                # Nothing left anywhere: sleep until a create, a NOTIFY or the next poll.
                # (Not wait_for: on Python 3.11 it swallows a cancel that coincides with
                # the wake-up, and the pipeline could then never stop this task.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()

    def reserve_for_created(self, count: int) -> CreateClaimed | None:
        """Idle processors for up to `count` tasks intake is about to create: those are
        created already claimed by this instance (None: none idle, or stopping).

        The slots stay taken until `created_claimed()` is called with the reservation."""
        if not self._claiming:
            return None
        taken = self._attempts.reserve(min(count, self._batch_max))
        return CreateClaimed(self._owner, self._lease_s, taken) if taken else None

    def created_claimed(self, reservation: CreateClaimed, claims: Sequence[Claim]) -> None:
        """The tasks created claimed under `reservation` (committed; there may be fewer
        than reserved, or none if the insert failed): held, and handed to the processors."""
        self._attempts.unreserve(reservation.count)
        self._hand_over(claims)
        self._metrics.status_changes.labels("in_progress").inc(len(claims))

    def _hand_over(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            self._attempts.claimed(claim)
            if self._claiming:
                self.outbox.put_nowait(claim)

    async def _claim_new(self, ids: list[uuid.UUID]) -> list[Claim]:
        started = asyncio.get_running_loop().time()
        claims = await self._store.claim_new(ids, self._owner, self._lease_s)
        self._observe("claim_new", len(claims), started)
        return claims

    async def _claim(self, limit: int) -> list[Claim]:
        started = asyncio.get_running_loop().time()
        rows = await self._store.claim(self._owner, self._lease_s, limit, self._attempts.held())
        self._observe("claim", len(rows), started)
        for claim, recovered in rows:
            if recovered:
                self._metrics.lease_recoveries.inc()
                log.warning(
                    "lease expired, task claimed again",
                    task_id=str(claim.task_id),
                    attempt=claim.attempt,
                    source=claim.source.value,
                )
        return [claim for claim, _ in rows]

    def _observe(self, operation: str, claimed: int, started: float) -> None:
        self._metrics.db_up.set(1)
        self._metrics.status_changes.labels("in_progress").inc(claimed)
        if claimed:
            self._metrics.db_batch_size.labels(operation).observe(claimed)
            self._metrics.db_batch_seconds.labels(operation).observe(
                asyncio.get_running_loop().time() - started
            )

    async def stop_taking_work(self, grace: Grace) -> None:
        """Claim nothing more; wait for a claim in flight; take back unstarted claims."""
        self._claiming = False
        self._wake.set()
        try:
            async with asyncio.timeout(grace.flush_s):
                await self._between_calls.wait()
        except TimeoutError:
            log.warning(
                "dispatcher did not stop claiming in time; a claim in flight is left to its lease"
            )
        self._take_back()

    async def finish(self, grace: Grace) -> None:
        """Stop the loop (a claim still in flight is left to its lease); take back the rest."""
        self._claiming = False
        await self.cancel_loops()
        self._take_back()

    def _take_back(self) -> None:
        """Empty the outbox: those claims stay held, unstarted, to be handed back."""
        while not self.outbox.empty():
            self.outbox.get_nowait()
