"""The lifecycle every actor and background loop shares: start, then a two-phase stop.

Like River's `startstop.Service` and aiojobs' `wait_and_close()` then `close()`:

1. `start()` — run its loops as named asyncio tasks (`tasks`, for a supervisor to watch);
2. `stop_taking_work(grace)` — accept nothing new; quick and idempotent;
3. `finish(grace)` — complete what was accepted, or hand it back, within the bounds of
   `grace`; then its loops are cancelled and awaited.

A shutdown is then the same two calls over a list of components, in data-flow order.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

# How long a component waits for its cancelled loops to end: a bound, not an expected time.
CANCEL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Grace:
    """The bounds of one shutdown.

    `ends` is the event-loop time until which running work may go on; `flush_s` bounds
    each step that only commits what is already done or in flight (queued creates, a
    claim sent to PostgreSQL, produced outcomes), and is never shorter than a second.
    """

    ends: float
    flush_s: float

    @classmethod
    def starting_now(cls, grace_s: float) -> Grace:
        """A grace of `grace_s` seconds from now."""
        now = asyncio.get_running_loop().time()
        return cls(ends=now + grace_s, flush_s=max(grace_s, 1.0))

    def left(self) -> float:
        """Seconds until `ends` (0 once it has passed)."""
        return max(self.ends - asyncio.get_running_loop().time(), 0.0)


class Lifecycle(Protocol):
    """What every background component offers its owner."""

    def start(self) -> None:
        """Start working (in named background tasks); return at once."""

    async def stop_taking_work(self, grace: Grace) -> None:
        """Accept no new work. Idempotent."""

    async def finish(self, grace: Grace) -> None:
        """Complete or hand back what was accepted, within `grace`; then stop for good."""


LoopSpec = tuple[str, Coroutine[Any, Any, None]]


class Actor(abc.ABC):
    """A `Lifecycle` made of loops that run until cancelled.

    Subclasses name their loops in `loops()`; `start()` runs each as a named task, and
    the default `finish()` cancels them (bounded). A loop that returns or raises before
    that is a failure for the supervisor to notice; the actor itself does not restart it.
    """

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    def loops(self) -> Iterable[LoopSpec]:
        """The (name, coroutine) of each loop to run."""

    def start(self) -> None:
        """Run every loop as a named task (they copy the caller's structlog context)."""
        self.tasks = [asyncio.create_task(coro, name=name) for name, coro in self.loops()]

    async def stop_taking_work(self, grace: Grace) -> None:
        """Accept no new work; by default there is nothing to refuse."""
        del grace

    async def finish(self, grace: Grace) -> None:
        """Stop for good; by default, just cancel the loops."""
        del grace
        await self.cancel_loops()

    async def cancel_loops(self) -> None:
        """Cancel the loops and wait (at most `CANCEL_TIMEOUT_S`) until they end."""
        await cancel_and_wait(self.tasks)


class Loop(Actor):
    """A single background loop (a NOTIFY listener, a statistics refresh) as an `Actor`."""

    def __init__(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        super().__init__()
        self._spec: LoopSpec = (name, coro)

    def loops(self) -> Iterable[LoopSpec]:
        """The one loop."""
        return [self._spec]

    async def finish(self, grace: Grace) -> None:
        """Cancel the loop, or close its coroutine if it never started."""
        if not self.tasks:
            self._spec[1].close()
        await super().finish(grace)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout: float = CANCEL_TIMEOUT_S
) -> None:
    """Cancel `tasks` and wait up to `timeout` for them to end; log any that did not."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, stuck = await asyncio.wait(tasks, timeout=timeout)
    for task in done:  # retrieved, so that asyncio does not report it again
        if not task.cancelled():
            task.exception()
    if stuck:
        log.error("actors ignored cancellation", actors=[t.get_name() for t in stuck])
