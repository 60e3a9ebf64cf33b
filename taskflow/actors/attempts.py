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
  committed in time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection

from taskflow.models import Claim


class Attempts:
    """Held attempts by task id (the latest attempt of each) and a count of free slots."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._slot_freed = asyncio.Event()
        self._held: dict[uuid.UUID, Claim] = {}

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

    def held(self) -> Collection[uuid.UUID]:
        """The tasks whose current attempt this instance holds (a live view)."""
        return self._held.keys()
