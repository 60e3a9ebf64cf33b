"""The pruner's runs, against a fake repository (the SQL side: tests/integration)."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from taskflow.errors import StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.retention import Pruner, prune_interval, retention_loops


class FakeStore:
    """Holds `waiting` prunable tasks; `locked` plays another instance holding the lock."""

    def __init__(self, waiting: int, *, locked: bool = False) -> None:
        self.waiting = waiting
        self.locked = locked
        self.calls: list[tuple[int, int]] = []
        self.called_at: list[float] = []  # event-loop times
        self.failures = 0
        self.emptied = asyncio.Event()

    async def prune_finished(self, retention_s: int, limit: int) -> int | None:
        self.calls.append((retention_s, limit))
        self.called_at.append(asyncio.get_running_loop().time())
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is unreachable: test")
        if self.locked:
            return None
        count = min(limit, self.waiting)
        self.waiting -= count
        if not self.waiting:
            self.emptied.set()
        return count


def pruned(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("taskflow_pruned_tasks_total")
    assert value is not None
    return value


async def test_a_run_deletes_in_batches_until_one_is_not_full() -> None:
    store, metrics = FakeStore(2500), Metrics()
    pruner = Pruner(store, metrics, 3600, batch_size=1000, batch_pause_s=0)
    with structlog.testing.capture_logs() as logs:
        assert await pruner.prune_once() == 2500
    assert store.calls == [(3600, 1000)] * 3
    assert pruned(metrics) == 2500
    [line] = [e for e in logs if e["event"] == "retention.pruned"]
    assert (line["count"], line["batches"], line["log_level"]) == (2500, 3, "info")


async def test_a_run_pauses_between_its_batches() -> None:
    store = FakeStore(2500)
    pruner = Pruner(store, Metrics(), 3600, batch_size=1000, batch_pause_s=0.05)
    assert await pruner.prune_once() == 2500
    first, second, third = store.called_at
    assert second - first >= 0.05
    assert third - second >= 0.05


async def test_a_run_with_nothing_to_delete_logs_quietly() -> None:
    store, metrics = FakeStore(0), Metrics()
    with structlog.testing.capture_logs() as logs:
        assert await Pruner(store, metrics, 60).prune_once() == 0
    [line] = [e for e in logs if e["event"] == "retention.pruned"]
    assert (line["count"], line["log_level"]) == (0, "debug")
    assert pruned(metrics) == 0


async def test_a_run_locked_out_by_another_instance_deletes_nothing() -> None:
    store, metrics = FakeStore(10, locked=True), Metrics()
    assert await Pruner(store, metrics, 60).prune_once() is None
    assert store.waiting == 10
    assert len(store.calls) == 1
    assert pruned(metrics) == 0


async def test_a_failed_run_is_logged_and_the_next_one_goes_on() -> None:
    store, metrics = FakeStore(5), Metrics()
    store.failures = 1
    pruner = Pruner(store, metrics, 2)  # every second
    with structlog.testing.capture_logs() as logs:
        runner = asyncio.create_task(pruner.run(), name="test-pruner")
        async with asyncio.timeout(10):
            await store.emptied.wait()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["retention.failed"]
    assert pruned(metrics) == 5


@pytest.mark.parametrize(
    ("retention_s", "interval_s"),
    [(1, 1.0), (2, 1.0), (30, 15.0), (120, 60.0), (7 * 86_400, 60.0)],
)
def test_runs_are_at_least_once_a_minute(retention_s: int, interval_s: float) -> None:
    assert prune_interval(retention_s) == interval_s


def test_a_retention_of_zero_has_no_pruner() -> None:
    with pytest.raises(ValueError, match="keeps everything"):
        Pruner(FakeStore(0), Metrics(), 0)
    assert retention_loops(FakeStore(0), Metrics(), 0) == {}


async def test_a_retention_of_one_second_or_more_runs_one_pruner() -> None:
    store = FakeStore(3)
    loops = retention_loops(store, Metrics(), 1)
    assert list(loops) == ["retention"]
    runner = asyncio.create_task(loops["retention"], name="test-retention")
    async with asyncio.timeout(10):
        await store.emptied.wait()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert store.calls == [(1, 2000)]  # the retention it was given, the default batch


def test_the_pause_after_a_batch_keeps_the_pruner_to_its_share_of_the_time() -> None:
    pruner = Pruner(FakeStore(0), Metrics(), 60, batch_pause_s=0.05, duty=0.25)
    assert pruner.pause_after(0.2) == pytest.approx(0.6)  # busy 0.2 s of every 0.8 s
    assert pruner.pause_after(0.001) == 0.05  # never less than the floor
