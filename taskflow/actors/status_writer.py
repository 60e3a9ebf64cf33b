"""The status writer: outcomes of many processors committed in one statement.

A processor hands its outcome over and waits for the commit. Nothing is only in memory:
when PostgreSQL is unreachable the batch is kept and retried with backoff until it is
written or the pipeline stops (then the lease runs out and another attempt is made).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable

import structlog

from taskflow.actors.batching import Batcher
from taskflow.actors.ports import PipelineStore
from taskflow.backoff import Backoff
from taskflow.errors import StoreUnavailable, TaskflowError
from taskflow.lifecycle import Actor, Grace, LoopSpec
from taskflow.metrics import Metrics
from taskflow.models import Outcome

log = structlog.get_logger(__name__)

_Request = tuple[Outcome, "asyncio.Future[bool]"]


class StatusWriter(Actor):
    """Commits outcomes in batches; `write()` tells whether the attempt still held its lease.

    Stopping: it takes outcomes until `finish()`, which waits (at most `grace.flush_s`)
    until every handed-over outcome is written.
    """

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        *,
        owner: str,
        capacity: int,
        batch_max: int = 1000,
        max_backoff: float = 5.0,
        max_errors: int = 5,
    ) -> None:
        super().__init__()
        self._store = store
        self._metrics = metrics
        self._owner = owner
        self._inbox: Batcher[_Request] = Batcher(capacity, batch_max)
        self._max_backoff = max_backoff
        self._max_errors = max_errors
        metrics.track_queue("status_writer", self._inbox.qsize, capacity)

    async def write(self, outcome: Outcome) -> bool:
        """Commit `outcome`; False when it was fenced off (another attempt owns the task)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._inbox.put((outcome, future))
        return await future

    def loops(self) -> Iterable[LoopSpec]:
        """One loop, writing batches until cancelled."""
        return [("status-writer", self.run())]

    async def run(self) -> None:
        """Write batches until cancelled."""
        await self._inbox.run(self._write_with_retry)

    async def _write_with_retry(self, batch: list[_Request]) -> None:
        backoff = Backoff(0.05, self._max_backoff)
        errors = 0
        loop = asyncio.get_running_loop()
        while True:
            live = [(o, f) for o, f in batch if not f.done()]
            if not live:
                return
            started = loop.time()
            try:
                written = await self._store.finish([o for o, _ in live], self._owner)
            except TaskflowError as exc:
                errors += 0 if isinstance(exc, StoreUnavailable) else 1
                self._metrics.db_up.set(0 if isinstance(exc, StoreUnavailable) else 1)
                if errors >= self._max_errors:
                    log.error("status batch rejected", size=len(live), error=str(exc))
                    for _, fut in live:
                        fut.set_exception(exc)
                    return
                self._metrics.status_write_retries.inc()
                log.warning(
                    "status batch failed, retrying",
                    size=len(live),
                    error=str(exc),
                    retry_in_s=round(backoff.delay, 3),
                )
                await backoff.sleep()
                continue
            self._metrics.db_up.set(1)
            self._metrics.db_batch_size.labels("finish").observe(len(live))
            self._metrics.db_batch_seconds.labels("finish").observe(loop.time() - started)
            self._resolve(live, written)
            return

    def _resolve(self, live: list[_Request], written: set[tuple[uuid.UUID, int]]) -> None:
        changes: Counter[str] = Counter()
        fenced = 0
        for outcome, fut in live:
            ok = (outcome.claim.task_id, outcome.claim.attempt) in written
            if ok:
                changes[outcome.status.value] += 1
            else:
                fenced += 1
            fut.set_result(ok)
        for status, count in changes.items():  # once per batch: labels() is not free
            self._metrics.status_changes.labels(status).inc(count)
        if fenced:
            self._metrics.fenced_writes.inc(fenced)

    async def finish(self, grace: Grace) -> None:
        """Wait (at most `grace.flush_s`) until every handed-over outcome is written; stop."""
        if not await self._inbox.join(grace.flush_s):
            log.warning("status writer did not drain in time", waiting=self._inbox.qsize())
        await self.cancel_loops()
