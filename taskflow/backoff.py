"""Exponential backoff: the one way taskflow waits before trying something again."""

from __future__ import annotations

import asyncio


class Backoff:
    """Delays of `first`, `first * factor`, … capped at `cap`; `reset()` after a success.

    Each caller keeps one `Backoff` per retry loop; `sleep()` waits the next delay.
    """

    __slots__ = ("_cap", "_current", "_factor", "_first")

    def __init__(self, first: float, cap: float, factor: float = 2.0) -> None:
        if not 0 < first <= cap or factor < 1:
            raise ValueError("need 0 < first <= cap and factor >= 1")
        self._first = first
        self._cap = cap
        self._factor = factor
        self._current = first

    @property
    def delay(self) -> float:
        """The delay the next `take()` or `sleep()` uses."""
        return self._current

    def take(self) -> float:
        """Return the next delay and grow the one after it (up to the cap)."""
        delay = self._current
        self._current = min(self._current * self._factor, self._cap)
        return delay

    def reset(self) -> None:
        """Start again from `first` (the thing being retried worked)."""
        self._current = self._first

    async def sleep(self) -> float:
        """Wait the next delay; return how long that was."""
        delay = self.take()
        await asyncio.sleep(delay)
        return delay
