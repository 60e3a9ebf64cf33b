"""A one-line progress bar for the command line, drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`label [#####.....] done/total pct rate/s` on `stream` (default stderr).

    It draws only when the stream is a terminal, so piped or logged output stays clean;
    redraws are limited to ten a second.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.done = 0
        self._label = label
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int = 1) -> None:
        """Count `count` more items done."""
        self.done += count
        now = time.monotonic()
        if self._enabled and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        width = 30
        fraction = self.done / self.total if self.total else 1.0
        filled = min(width, int(width * fraction))
        rate = self.done / max(now - self._started, 1e-9)
        self._stream.write(
            f"\r{self._label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {fraction:4.0%} {rate:,.0f}/s"
        )
        self._stream.flush()
