"""The analyzer's loop and pacing, against a fake repository (the SQL side:
tests/integration/test_analyze.py)."""

from __future__ import annotations

import asyncio

import pytest

from taskflow.analyze import COOLDOWN_S, Analyzer, analyzer_loops
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


async def test_the_loop_rests_for_the_cooldown_after_an_analyze_and_checks_at_its_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore()
    store.stale = ["tasks", "task_events"]
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        pauses.append(delay)
        if len(pauses) == 3:
            store.checked_enough.set()
        await real_sleep(0)

    monkeypatch.setattr("taskflow.analyze.asyncio.sleep", recording_sleep)
    runner = asyncio.create_task(Analyzer(store, interval_s=2.0, cooldown_s=7.0).run())
    try:
        async with asyncio.timeout(5):
            await store.checked_enough.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert store.analyzed == [["tasks", "task_events"]]
    assert pauses[:3] == [7.0, 2.0, 2.0]  # the cooldown after the ANALYZE, then checks


def test_the_service_runs_one_analyzer() -> None:
    loops = analyzer_loops(FakeStore())
    assert list(loops) == ["analyzer"]
    loops["analyzer"].close()  # never started
