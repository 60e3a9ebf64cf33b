"""Progress bars on stderr for the long parts of a run (off with --no-progress)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Never

from tqdm import tqdm


class Progress:
    """Makes tqdm bars on stderr, or silent ones when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, description: str, total: float, unit: str) -> tqdm[Never]:
        """A bar that is closed by the caller (use it as a context manager)."""
        return tqdm(
            total=total,
            desc=description,
            unit=unit,
            file=sys.stderr,
            disable=not self.enabled,
            leave=False,
            dynamic_ncols=True,
        )

    @asynccontextmanager
    async def timed(self, description: str, seconds: float) -> AsyncIterator[None]:
        """A bar that fills with wall time over `seconds` while the body runs."""
        with self.bar(description, round(seconds, 1), "s") as bar:
            ticker = asyncio.create_task(_tick(bar, seconds), name="bench-progress")
            try:
                yield
            finally:
                ticker.cancel()


async def _tick(bar: tqdm[Never], seconds: float, every: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        await asyncio.sleep(every)
        bar.n = min(round(loop.time() - started, 1), seconds)
        bar.refresh()
