"""What the scale scenarios (large-table, retention) share: stored tasks and a timed drain.

Stored tasks are terminal rows copied straight into `tasks` (see
`BenchDatabase.insert_finished`), finished between two hours and one hour ago. A drain is
timed as in the drain scenario, but only over the tasks that finished after it began, and
its end is watched through the status index, never by counting the whole table.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from taskflow_bench.database import BenchDatabase
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.drain import timeout_for
from taskflow_bench.service import ServiceConfig
from taskflow_bench.stats import rate

STORED_AGO = timedelta(hours=1)
STORED_SPAN = timedelta(hours=1)


async def store(ctx: Context, db: BenchDatabase, tasks: int, label: str) -> float:
    """Store `tasks` terminal tasks (finished an hour ago and before); the seconds it took,
    VACUUM (ANALYZE) included."""
    started = time.monotonic()
    with ctx.progress.bar(f"{label}: storing {tasks:,} terminal tasks", tasks) as bar:
        await db.insert_finished(tasks, finished_ago=STORED_AGO, span=STORED_SPAN)
        bar.advance(tasks)
    return time.monotonic() - started


class Drain:
    """A drain of waiting tasks: `prepare` before the service starts, `measure` after."""

    def __init__(self, ctx: Context, db: BenchDatabase, tasks: int, label: str) -> None:
        self._ctx = ctx
        self._db = db
        self.tasks = tasks
        self._label = label
        self._since: datetime | None = None

    async def prepare(self) -> None:
        """Note the time, then copy the waiting tasks in (ANALYZE included)."""
        self._since = await self._db.clock()
        with self._ctx.progress.bar(f"{self._label}: inserting", self.tasks) as bar:
            await self._db.insert_waiting(self.tasks)
            bar.advance(self.tasks)

    async def measure(self, config: ServiceConfig) -> float:
        """Wait until nothing is new or in progress; tasks/s from the first start to the
        last finish of the tasks finished since `prepare`, by PostgreSQL's clock."""
        with self._ctx.progress.bar(f"{self._label}: processing", self.tasks) as bar:

            def show(left: int) -> None:
                bar.set(self.tasks - left)

            await self._db.wait_unfinished(timeout_for(self.tasks, config), show)
        if self._since is None:
            raise RuntimeError("Drain.measure before Drain.prepare")
        window = await self._db.finished_window(self._since)
        return rate(window.tasks, window.seconds)
