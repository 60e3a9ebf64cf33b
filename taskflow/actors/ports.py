"""What the actors need from the store: `TaskStore` has it, and so do the unit tests' fakes."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from taskflow.db.store import CreateClaimed, InsertResult
from taskflow.models import Claim, NewTask, Outcome


class PipelineStore(Protocol):
    """The store operations the pipeline uses."""

    async def insert_tasks(
        self, batch: Sequence[NewTask], claim: CreateClaimed | None = None
    ) -> InsertResult:
        """Insert a batch of new tasks (the first `claim.count` already claimed)."""

    async def claim(
        self, owner: str, lease_s: float, limit: int, running: Collection[uuid.UUID] = ()
    ) -> list[tuple[Claim, bool]]:
        """Claim new or lease-expired tasks, except those in `running`."""

    async def claim_new(self, ids: Sequence[uuid.UUID], owner: str, lease_s: float) -> list[Claim]:
        """Claim tasks just created, if still new."""

    async def finish(self, outcomes: Sequence[Outcome], owner: str) -> set[tuple[uuid.UUID, int]]:
        """Write outcomes, fenced by owner and attempt; return the (id, attempt) written."""

    async def renew(
        self, ids: Iterable[uuid.UUID], owner: str, lease_s: float
    ) -> dict[uuid.UUID, datetime | None]:
        """Extend leases; return those still held, each with its `cancel_requested_at`."""

    async def release(self, ids: Iterable[uuid.UUID], owner: str) -> set[uuid.UUID]:
        """Hand leases back."""
