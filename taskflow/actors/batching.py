"""Group commit: a bounded inbox whose consumer takes everything waiting as one batch.

While one batch is being written the next one gathers in the inbox, so the batch size
follows the load without a timer. Intake (creates) and the status writer (outcomes) are
both one `Batcher` and a function that writes a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """A bounded inbox of `T`, written out by `run(write)` in batches of at most `batch_max`."""

    def __init__(self, capacity: int, batch_max: int = 1000) -> None:
        self._inbox: asyncio.Queue[T] = asyncio.Queue(capacity)
        self._batch_max = batch_max

    def qsize(self) -> int:
        """Items waiting (not counting the batch being written)."""
        return self._inbox.qsize()

    def put_nowait(self, item: T) -> None:
        """Queue `item`; raise `asyncio.QueueFull` when the inbox is full."""
        self._inbox.put_nowait(item)

    async def put(self, item: T) -> None:
        """Queue `item`, waiting for room (backpressure)."""
        await self._inbox.put(item)

    async def run(self, write: Callable[[list[T]], Awaitable[None]]) -> NoReturn:
        """Take what waits (at least one item, at most `batch_max`) and `write` it; repeat."""
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < self._batch_max and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await write(batch)
            finally:
                for _ in batch:
                    self._inbox.task_done()

    def take_waiting(self) -> list[T]:
        """Remove and return everything still waiting (it counts as handled)."""
        taken: list[T] = []
        while not self._inbox.empty():
            taken.append(self._inbox.get_nowait())
            self._inbox.task_done()
        return taken

    async def join(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until every queued item was written; True if so."""
        try:
            async with asyncio.timeout(timeout):
                await self._inbox.join()
        except TimeoutError:
            return False
        return True
