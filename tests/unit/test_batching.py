"""The group-commit `Batcher` shared by intake and the status writer."""

from __future__ import annotations

import asyncio

import pytest

from taskflow.actors.batching import Batcher


async def test_what_waits_during_a_write_is_the_next_batch() -> None:
    batcher: Batcher[int] = Batcher(100, batch_max=1000)
    gate, written = asyncio.Event(), []

    async def write(batch: list[int]) -> None:
        written.append(batch)
        await gate.wait()

    runner = asyncio.create_task(batcher.run(write))
    try:
        batcher.put_nowait(0)
        await asyncio.sleep(0)  # the first batch is being written
        for i in range(1, 6):
            batcher.put_nowait(i)
        assert batcher.qsize() == 5
        gate.set()
        assert await batcher.join(5)
        assert written == [[0], [1, 2, 3, 4, 5]]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_batches_are_at_most_batch_max() -> None:
    batcher: Batcher[int] = Batcher(100, batch_max=3)
    written: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        written.append(batch)

    for i in range(7):
        batcher.put_nowait(i)
    runner = asyncio.create_task(batcher.run(write))
    try:
        assert await batcher.join(5)
        assert written == [[0, 1, 2], [3, 4, 5], [6]]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_full_inbox_refuses_and_a_failed_write_does_not_stop_the_loop() -> None:
    batcher: Batcher[str] = Batcher(2)
    batcher.put_nowait("a")
    batcher.put_nowait("b")
    with pytest.raises(asyncio.QueueFull):
        batcher.put_nowait("c")
    seen: list[list[str]] = []

    async def write(batch: list[str]) -> None:
        seen.append(batch)
        if len(seen) == 1:
            raise RuntimeError("the first write fails")

    async def run_until_it_fails() -> None:
        await batcher.run(write)

    with pytest.raises(RuntimeError):
        await asyncio.wait_for(run_until_it_fails(), 5)
    assert await batcher.join(0.1)  # a failed batch still counts as handled
    await batcher.put("c")
    runner = asyncio.create_task(batcher.run(write))
    try:
        assert await batcher.join(5)
        assert seen == [["a", "b"], ["c"]]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_take_waiting_empties_the_inbox_and_join_times_out() -> None:
    batcher: Batcher[int] = Batcher(10)
    for i in range(3):
        batcher.put_nowait(i)
    assert not await batcher.join(0.01)  # nobody writes
    assert batcher.take_waiting() == [0, 1, 2]
    assert batcher.qsize() == 0
    assert await batcher.join(0.01)
