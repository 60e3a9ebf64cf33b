"""Retention: terminal tasks older than `TASKFLOW_RETENTION` are deleted, in small batches.

Every instance runs a `Pruner`, but only one batch runs at a time across all of them:
each batch is its own short transaction that first takes a transaction-level advisory
lock with `pg_try_advisory_xact_lock` and deletes nothing if another instance holds it
(a transaction-level lock, unlike a session lock, also works through a transaction-mode
pooler and is released by a crash). A batch deletes at most `BATCH_SIZE` tasks, their
history with them (the delete trigger of the lifecycle) and their idempotency keys (a column of the
task), oldest first. The pruner paces itself by what its batches cost: after a batch that
took `d` seconds it pauses `d * (1 - DUTY) / DUTY` (at least `BATCH_PAUSE_S`), so that it
keeps a database backend busy at most a `DUTY` share of the time, however slow the
batches get on a loaded machine, and the pipeline's own statements are never starved. A
run ends at the first batch that is not full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from taskflow.errors import TaskflowError
from taskflow.metrics import Metrics

log = structlog.get_logger(__name__)

BATCH_SIZE = 2000
BATCH_PAUSE_S = 0.05
DUTY = 0.15
MAX_INTERVAL_S = 60.0
MIN_INTERVAL_S = 1.0


class PruneStore(Protocol):
    """What the pruner needs from the repository."""

    async def prune_finished(self, retention_s: int, limit: int) -> int | None:
        """In one transaction: if the prune lock is free, delete up to `limit` terminal
        tasks whose `finished_at` is more than `retention_s` seconds old and return how
        many; None when another instance holds the lock."""


def retention_loops(
    store: PruneStore, metrics: Metrics, retention_s: int
) -> dict[str, Coroutine[Any, Any, None]]:
    """The pruner's loop by name, for the pipeline to run and supervise (none for `0`)."""
    if retention_s <= 0:
        log.info("retention.disabled", retention_s=0)
        return {}
    return {"retention": Pruner(store, metrics, retention_s).run()}


def prune_interval(retention_s: int) -> float:
    """Seconds between runs: once a minute, more often for a retention under two minutes."""
    return max(MIN_INTERVAL_S, min(MAX_INTERVAL_S, retention_s / 2))


class Pruner:
    """Deletes the terminal tasks that `retention_s` no longer keeps, run after run."""

    def __init__(
        self,
        store: PruneStore,
        metrics: Metrics,
        retention_s: int,
        *,
        batch_size: int | None = None,
        batch_pause_s: float = BATCH_PAUSE_S,
        duty: float = DUTY,
    ) -> None:
        if retention_s <= 0:
            raise ValueError("a retention of 0 keeps everything: do not run a pruner")
        self._store = store
        self._metrics = metrics
        self._retention_s = retention_s
        self._batch_size = batch_size or BATCH_SIZE
        self._batch_pause_s = batch_pause_s
        self._rest_per_busy_s = (1 - duty) / duty
        self.interval_s = prune_interval(retention_s)

    async def run(self) -> None:
        """Prune every `interval_s` until cancelled; a failed run is logged and retried."""
        log.info("retention.started", retention_s=self._retention_s, every_s=self.interval_s)
        while True:
            try:
                await self.prune_once()
            except TaskflowError as exc:
                log.warning("retention.failed", error=str(exc))
            await asyncio.sleep(self.interval_s)

    def pause_after(self, batch_s: float) -> float:
        """The pause after a batch that took `batch_s` seconds (see the module's doc)."""
        return max(self._batch_pause_s, batch_s * self._rest_per_busy_s)

    async def prune_once(self) -> int | None:
        """One run: batches until one is not full; the count deleted, None if locked out."""
        started = time.monotonic()
        deleted = 0
        batches = 0
        while True:
            batch_started = time.monotonic()
            count = await self._store.prune_finished(self._retention_s, self._batch_size)
            if count is None:  # another instance is pruning: it will finish the job
                if batches == 0:
                    log.debug("retention.skipped")
                    return None
                break
            batches += 1
            deleted += count
            self._metrics.pruned_tasks.inc(count)
            if count < self._batch_size:
                break
            await asyncio.sleep(self.pause_after(time.monotonic() - batch_started))
        duration_s = round(time.monotonic() - started, 3)
        # One line per run; at info only when it deleted something, so that an idle
        # retention does not log every minute.
        emit = log.info if deleted else log.debug
        emit(
            "retention.pruned",
            count=deleted,
            batches=batches,
            retention_s=self._retention_s,
            duration_s=duration_s,
        )
        return deleted
