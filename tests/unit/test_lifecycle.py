"""The lifecycle every actor shares: named loops, a grace, bounded cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from taskflow.actors.dispatcher import Dispatcher
from taskflow.actors.intake import Intake
from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.actors.processor import ProcessorPool
from taskflow.actors.status_writer import StatusWriter
from taskflow.amqp.consumer import Consumer
from taskflow.lifecycle import Actor, Grace, Lifecycle, Loop, LoopSpec, cancel_and_wait


class Ticker(Actor):
    """Two loops that tick until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def loops(self) -> Iterable[LoopSpec]:
        return [("tick-0", self._tick()), ("tick-1", self._tick())]

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


async def test_an_actor_runs_named_loops_until_finish() -> None:
    ticker = Ticker()
    ticker.start()
    assert [t.get_name() for t in ticker.tasks] == ["tick-0", "tick-1"]
    await asyncio.sleep(0.01)
    assert ticker.ticks > 0
    grace = Grace.starting_now(1)
    await ticker.stop_taking_work(grace)
    assert not any(t.done() for t in ticker.tasks)  # phase one refuses work, runs on
    await ticker.finish(grace)
    assert all(t.cancelled() for t in ticker.tasks)


async def test_a_loop_that_never_started_is_closed_not_leaked() -> None:
    ran: list[str] = []

    async def listener() -> None:
        ran.append("ran")

    loop = Loop("notify-listener", listener())
    await loop.finish(Grace.starting_now(0))  # no "coroutine was never awaited" warning
    assert ran == []


async def test_grace_counts_down_and_flushes_for_at_least_a_second() -> None:
    grace = Grace.starting_now(0.2)
    assert 0 < grace.left() <= 0.2
    assert grace.flush_s == 1.0
    assert Grace.starting_now(5).flush_s == 5
    assert Grace(ends=0, flush_s=1).left() == 0


async def test_cancel_and_wait_is_bounded_by_a_task_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    async def failed() -> None:
        raise RuntimeError("died earlier")

    task = asyncio.create_task(stubborn(), name="stubborn")
    dead = asyncio.create_task(failed(), name="dead")
    await asyncio.sleep(0)
    await cancel_and_wait([task, dead], timeout=0.05)  # bounded, and does not raise
    assert not task.done()
    release.set()
    await asyncio.wait_for(task, 5)


def test_every_background_component_has_the_lifecycle() -> None:
    # Checked by mypy (structurally): each of these is a `Lifecycle`.
    components: list[type[Lifecycle]] = [
        Intake,
        Dispatcher,
        ProcessorPool,
        StatusWriter,
        LeaseKeeper,
        Loop,
        Consumer,
    ]
    assert all(callable(getattr(c, "stop_taking_work", None)) for c in components)
