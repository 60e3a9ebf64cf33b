"""The analyzer's loop and pacing, against a fake repository (the SQL side:
tests/integration/test_analyze.py)."""

from __future__ import annotations

import asyncio

from taskflow.analyze import COOLDOWN_S, Analyzer
from taskflow.errors import StoreUnavailable


class FakeStore:
    """Stale tables on demand; `failures` checks fail first as if PostgreSQL were away."""

    def __init__(self, *, failures: int = 0) -> None:
        self.stale: list[str] = []
        self.failures = failures
        self.checks = 0
        self.analyzed: list[list[str]] = []
        self.checked_enough = asyncio.Event()

    async def stale_tables(self, min_changes: int, factor: float) -> list[str]:
        self.checks += 1
        if self.checks >= 5:
            self.checked_enough.set()
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is unreachable: test")
        return list(self.stale)

    async def analyze_stale(self, min_changes: int, factor: float) -> list[str] | None:
        tables, self.stale = self.stale, []
        self.analyzed.append(tables)
        return tables


def test_the_pause_after_an_analyze_keeps_it_under_a_twentieth_of_a_backend() -> None:
    analyzer = Analyzer(FakeStore())
    assert analyzer.pause_after(0.02) == COOLDOWN_S
    assert analyzer.pause_after(2.0) == 40.0


async def test_nothing_stale_means_no_analyze() -> None:
    store = FakeStore()
    assert await Analyzer(store).analyze_once() == []
    assert store.analyzed == []


async def test_the_loop_outlives_an_unreachable_database_and_analyzes_when_stale() -> None:
    store = FakeStore(failures=2)
    store.stale = ["tasks"]
    runner = asyncio.create_task(Analyzer(store, interval_s=0.001, cooldown_s=0.001).run())
    try:
        async with asyncio.timeout(5):
            await store.checked_enough.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert store.analyzed == [["tasks"]]  # once the database answered again, and once only
