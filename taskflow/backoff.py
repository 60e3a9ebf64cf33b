"""Exponential backoff: the one rule for every retry loop of taskflow."""

from __future__ import annotations


class Backoff:
    """Delays that double from `first` up to `cap`; `reset()` after a success."""

    __slots__ = ("_cap", "_first", "_next")

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long, at most `cap`."""
        delay = self._next
        self._next = min(delay * 2, self._cap)
        return delay

    def reset(self) -> None:
        """Start again from `first` (the operation succeeded)."""
        self._next = self._first
