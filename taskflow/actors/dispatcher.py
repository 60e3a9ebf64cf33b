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
from collections.abc import Callable, Collection, Sequence

import structlog

from taskflow.actors.ports import PipelineStore
from taskflow.errors import StoreUnavailable, TaskflowError
from taskflow.metrics import Metrics
from taskflow.models import Claim, Task

log = structlog.get_logger(__name__)


class Dispatcher:
    """Feeds `outbox` (the processors' inbox) with claimed tasks, up to `slots` at a time.

    `running()` names the tasks whose attempts this instance still runs; they are never
    claimed again here, even when their lease ran out meanwhile.
    """

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        *,
        owner: str,
        lease_s: float,
        slots: int,
        running: Callable[[], Collection[uuid.UUID]] = frozenset,
        poll_s: float = 1.0,
        batch_max: int = 1000,
    ) -> None:
        self._store = store
        self._running = running
        self._metrics = metrics
        self._owner = owner
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._batch_max = batch_max
        self.outbox: asyncio.Queue[Claim] = asyncio.Queue(slots)
        self._handoff: asyncio.Queue[uuid.UUID] = asyncio.Queue(slots)
        self._free = slots
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._parked = asyncio.Event()
        self.claiming = True
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

    def slot_freed(self) -> None:
        """A processor finished an attempt and can take another."""
        self._free += 1
        self._slot_freed.set()

    async def run(self) -> None:
        """Claim and hand over until cancelled; store errors back off and retry."""
        loop = asyncio.get_running_loop()
        last_poll = -float("inf")
        delay = 0.1
        while True:
            while self._free == 0 or not self.claiming:
                if not self.claiming:
                    self._parked.set()
                self._slot_freed.clear()
                await self._slot_freed.wait()
            want = min(self._free, self._batch_max)
            ids = [self._handoff.get_nowait() for _ in range(min(want, self._handoff.qsize()))]
            claims: list[Claim] = []
            room, polled = want, False
            failure: TaskflowError | None = None
            try:
                if ids:
                    claims += await self._claim_new(ids)
                room = want - len(claims)
                if room > 0 and (not ids or loop.time() - last_poll >= self._poll_s):
                    self._wake.clear()
                    claims += await self._claim(room)
                    last_poll, polled = loop.time(), True
            except TaskflowError as exc:
                failure = exc
            # Whatever was claimed before a failure holds a lease: hand it over too.
            for claim in claims:
                self._free -= 1
                self.outbox.put_nowait(claim)
            if failure is not None:
                self._metrics.db_up.set(0 if isinstance(failure, StoreUnavailable) else 1)
                log.warning("claim failed, retrying", error=str(failure), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if polled and len(claims) < room and self._handoff.empty():
                # Nothing left anywhere: sleep until a create, a NOTIFY or the next poll.
                # (Not wait_for: on Python 3.11 it swallows a cancel that coincides with
                # the wake-up, and the pipeline could then never stop this task.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()

    async def _claim_new(self, ids: list[uuid.UUID]) -> list[Claim]:
        started = asyncio.get_running_loop().time()
        claims = await self._store.claim_new(ids, self._owner, self._lease_s)
        self._observe("claim_new", len(claims), started)
        return claims

    async def _claim(self, limit: int) -> list[Claim]:
        started = asyncio.get_running_loop().time()
        rows = await self._store.claim(self._owner, self._lease_s, limit, self._running())
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

    async def stop(self, timeout: float) -> list[Claim]:
        """Stop claiming and take back the claims no processor has started.

        A claim already sent to PostgreSQL is waited for (at most `timeout`): once
        committed it holds a lease, and if it were abandoned here it would only be
        picked up again when that lease ran out.
        """
        self.claiming = False
        self._slot_freed.set()
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await self._parked.wait()
        except TimeoutError:
            log.warning(
                "dispatcher did not stop claiming in time; a claim in flight is left to its lease"
            )
        return self.drain_unstarted()

    def drain_unstarted(self) -> list[Claim]:
        """Stop claiming and take back the claims no processor has started."""
        self.claiming = False
        taken: list[Claim] = []
        while not self.outbox.empty():
            taken.append(self.outbox.get_nowait())
        return taken
