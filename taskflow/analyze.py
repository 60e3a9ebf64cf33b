"""Planner statistics that keep up with a burst: a lifecycle table is analyzed as soon as
it has changed more than its statistics know.

PostgreSQL's autovacuum analyzes a table once 50 rows plus 10 % of it have changed, and
looks once a minute (`autovacuum_naptime`). That suits a table that grows slowly. A new
deployment's tables are analyzed empty (migration 0004), and when tens of thousands of
tasks arrive within seconds (a queue full of waiting messages, a bulk import), the
planner goes on planning for an empty table until autovacuum comes round: `finish_tasks`
then compares every outcome of a batch with every running task (69 ms for a batch of 120
with 2,000 running, 5.8 ms once analyzed).

So every `INTERVAL_S` each instance asks `pg_stat_user_tables` whether `tasks` or
`task_events` changed by at least `MIN_CHANGES` rows and at least `FACTOR` times the rows
their statistics counted (a table that doubled), and if so runs `ANALYZE` on them. One
instance at a time: like retention, it first takes a transaction-level advisory lock and
does nothing when another instance holds it. A large table never doubles between two of
autovacuum's visits, so this only ever acts on young tables, where `ANALYZE` is cheap.
After an `ANALYZE` the next one waits at least `COOLDOWN_S`, and twenty times as long as
that one took, so that statistics never take more than a twentieth of a backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from taskflow.errors import TaskflowError

log = structlog.get_logger(__name__)

INTERVAL_S = 2.0
MIN_CHANGES = 1000
FACTOR = 1.0
COOLDOWN_S = 10.0
REST_PER_BUSY_S = 20.0


class AnalyzeStore(Protocol):
    """What the analyzer needs from the repository."""

    async def stale_tables(self, min_changes: int, factor: float) -> list[str]:
        """The lifecycle tables changed by at least `min_changes` rows and `factor` times
        the rows of their statistics since their last ANALYZE."""

    async def analyze_stale(self, min_changes: int, factor: float) -> list[str] | None:
        """In one transaction: if the analyze lock is free, ANALYZE the tables that
        `stale_tables` names and return them; None when another instance holds it."""


def analyzer_loops(store: AnalyzeStore) -> dict[str, Coroutine[Any, Any, None]]:
    """The analyzer's loop by name, for the pipeline to run and supervise."""
    return {"analyzer": Analyzer(store).run()}


class Analyzer:
    """Analyzes the lifecycle tables whenever they outgrow their statistics."""

    def __init__(
        self,
        store: AnalyzeStore,
        *,
        interval_s: float = INTERVAL_S,
        min_changes: int = MIN_CHANGES,
        factor: float = FACTOR,
        cooldown_s: float = COOLDOWN_S,
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._min_changes = min_changes
        self._factor = factor
        self._cooldown_s = cooldown_s

    async def run(self) -> None:
        """Check every `interval_s` until cancelled; a failed check is logged and retried."""
        while True:
            pause = self._interval_s
            try:
                started = time.monotonic()
                if await self.analyze_once():
                    pause = self.pause_after(time.monotonic() - started)
            except TaskflowError as exc:  # PostgreSQL away, or the table locked (1 s)
                log.debug("statistics.analyze_failed", error=str(exc))
            await asyncio.sleep(pause)

    def pause_after(self, analyze_s: float) -> float:
        """The pause after an ANALYZE that took `analyze_s` seconds."""
        return max(self._cooldown_s, analyze_s * REST_PER_BUSY_S)

    async def analyze_once(self) -> list[str] | None:
        """Analyze the tables that outgrew their statistics: their names ([] when none
        did), or None when another instance was analyzing."""
        if not await self._store.stale_tables(self._min_changes, self._factor):
            return []
        started = time.monotonic()
        analyzed = await self._store.analyze_stale(self._min_changes, self._factor)
        if analyzed:
            log.info(
                "statistics.analyzed",
                tables=analyzed,
                duration_s=round(time.monotonic() - started, 3),
            )
        return analyzed
