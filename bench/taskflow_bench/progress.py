"""Progress of the long parts of a run on stderr (taskflow's own bar; off with --no-progress)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from taskflow.progress import ProgressBar


class Bar:
    """One bar: counts go up with `advance`, or jump to a polled value with `set`."""

    def __init__(self, bar: ProgressBar | None) -> None:
        self._bar = bar

    def advance(self, count: int) -> None:
        """Count `count` more items done."""
        if self._bar is not None:
            self._bar.advance(count)

    def set(self, done: int) -> None:
        """`done` items are done now (a value read from elsewhere)."""
        if self._bar is not None:
            self._bar.advance(done - self._bar.done)


class Progress:
    """Makes bars on stderr (drawn on a terminal only), or silent ones when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator[Bar]:
        """A bar for `total` items, ended when the block ends."""
        bar = ProgressBar(total, description) if self.enabled else None
        try:
            yield Bar(bar)
        finally:
            if bar is not None:
                bar.close()

    @asynccontextmanager
    async def timed(self, description: str, seconds: float) -> AsyncIterator[None]:
        """A bar that fills with wall time (in tenths of a second) while the body runs."""
        with self.bar(f"{description} (0.1 s)", round(seconds * 10)) as bar:
            ticker = asyncio.create_task(_tick(bar, seconds), name="bench-progress")
            try:
                yield
            finally:
                ticker.cancel()


async def _tick(bar: Bar, seconds: float, every: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        await asyncio.sleep(every)
        bar.set(round(min(loop.time() - started, seconds) * 10))
