"""The attempts this instance holds a lease on, and the processors free to take one.

One `Attempts` is created by the pipeline and handed to the actors that share it, so
that none of them reads another's state:

- the dispatcher claims at most `free` tasks (`wait_free()`), registers each claim with
  `claimed()` (one slot fewer, and the attempt is held from then on), and never claims a
  task in `held()` again;
- a processor `started()` an attempt, calls `free_slot()` once it can take another claim
  (its outcome is handed to the status writer), and `ended()` once the outcome is
  committed, fenced off or refused for good — the lease is then no longer ours to keep;
- the lease keeper renews `held()`, and at shutdown hands back whatever is still held:
  claims no processor started, attempts abandoned at the grace's end, outcomes not
  committed in time;
- a cancel (a control notification, or a flag seen by the lease keeper) goes through
  `request_cancel()`: it stops the attempt's work if a processor is working on it
  (`working()` registered how), leaves a note for `working()` if no processor has
  started it yet, and is too late once the work is over (the outcome stands).
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Callable, Collection

from taskflow.models import Claim


class CancelRequest(enum.Enum):
    """What `Attempts.request_cancel()` did."""

    STOPPING = "stopping"  # the attempt's work is being cancelled; it ends `cancelled`
    PENDING = "pending"  # claimed, not started: it ends `cancelled` when a processor takes it
    TOO_LATE = "too_late"  # its work is over: the outcome it produced stands
    REPEATED = "repeated"  # asked before (a notification and a renewal): handled then
    NOT_HERE = "not_here"  # this instance does not hold that attempt


class Attempts:
    """Held attempts by task id (the latest attempt of each) and a count of free slots."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._slot_freed = asyncio.Event()
        self._held: dict[uuid.UUID, Claim] = {}
        self._working: dict[uuid.UUID, Callable[[], object]] = {}  # task id → stop the work
        self._worked: set[uuid.UUID] = set()  # work over, outcome not yet committed
        self._cancels: dict[uuid.UUID, float] = {}  # task id → when a cancel was requested

    @property
    def free(self) -> int:
        """Processors that can take a claim now."""
        return self._free

    async def wait_free(self) -> int:
        """Wait until at least one slot is free; return how many are."""
        while self._free <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return self._free

    def reserve(self, wanted: int) -> int:
        """Take up to `wanted` free slots for a claim about to be made; return how many.

        Whoever claims (the dispatcher, or intake creating tasks already claimed) reserves
        first, so that two claims in flight at once never take more slots than are free.
        Give them back with `unreserve()` before registering what was claimed."""
        taken = max(0, min(wanted, self._free))
        self._free -= taken
        return taken

    def unreserve(self, count: int) -> None:
        """Give back `count` slots taken by `reserve()`."""
        if count:
            self._free += count
            self._slot_freed.set()

    def claimed(self, claim: Claim) -> None:
        """A claim was committed for a free processor: it takes a slot and is held."""
        self._free -= 1
        self._held[claim.task_id] = claim

    def started(self, claim: Claim) -> None:
        """A processor started `claim` (held from now on if it was not yet).

        Should two attempts of one task meet here anyway, the newer replaces the older,
        whose `ended()` then leaves it alone.
        """
        self._held[claim.task_id] = claim

    def free_slot(self) -> None:
        """A processor can take another claim."""
        self._free += 1
        self._slot_freed.set()

    def ended(self, claim: Claim) -> None:
        """The attempt is over (outcome committed, fenced off or refused): no longer held."""
        if self._held.get(claim.task_id) is claim:
            del self._held[claim.task_id]
            self._working.pop(claim.task_id, None)
            self._worked.discard(claim.task_id)
            self._cancels.pop(claim.task_id, None)

    def working(self, claim: Claim, stop: Callable[[], object]) -> bool:
        """A processor works on `claim`; `stop()` cancels that work. True when a cancel
        was already requested (the processor then stops at once)."""
        if self._held.get(claim.task_id) is claim:
            self._working[claim.task_id] = stop
        return claim.task_id in self._cancels

    def worked(self, claim: Claim) -> float | None:
        """The work on `claim` is over; when a cancel was requested before that (epoch
        seconds, by PostgreSQL's clock), or None: the attempt then ends `cancelled`."""
        if self._held.get(claim.task_id) is not claim:
            return None
        self._working.pop(claim.task_id, None)
        self._worked.add(claim.task_id)
        return self._cancels.get(claim.task_id)

    def request_cancel(
        self, task_id: uuid.UUID, attempt: int, requested_at: float
    ) -> CancelRequest:
        """Stop attempt `attempt` of `task_id` if this instance runs it (see `CancelRequest`)."""
        claim = self._held.get(task_id)
        if claim is None or claim.attempt != attempt:
            return CancelRequest.NOT_HERE
        if task_id in self._cancels:
            return CancelRequest.REPEATED
        self._cancels[task_id] = requested_at
        if task_id in self._worked:
            return CancelRequest.TOO_LATE
        stop = self._working.get(task_id)
        if stop is None:
            return CancelRequest.PENDING
        stop()
        return CancelRequest.STOPPING

    def attempt_of(self, task_id: uuid.UUID) -> int | None:
        """The attempt number of `task_id` this instance holds, or None."""
        claim = self._held.get(task_id)
        return claim.attempt if claim is not None else None

    def held(self) -> Collection[uuid.UUID]:
        """The tasks whose current attempt this instance holds (a live view)."""
        return self._held.keys()
