"""An in-memory `PipelineStore` for the actors' unit tests.

It keeps the rules of `TaskStore` and `queries.sql` that the actors rely on: an
idempotency key names at most one task (a batch's repeat is reported as existing, with
its fingerprint); a claim starts a new attempt with a lease (owner, expiry); expired
leases are claimed again; an outcome is written only while its owner still holds its
attempt (fencing); renew and release touch only the caller's leases, and renew reports
each attempt's cancel flag; `cancel` and `retry` change statuses as their queries do, and
an expired lease with a cancel requested ends `cancelled` at the next claim instead of
getting a new attempt. Time is a manual clock (`advance()`), so lease expiry needs no
sleeping.

Tests can make an operation fail (`fail(op, *errors)`: the next calls raise those
errors, in order, and change nothing) or answer late (`hold(op)`: calls take effect,
then their answer waits until `let_go(op)`, like a commit whose reply is still on the
wire), and read what was called in `calls`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from taskflow.db.store import CreateClaimed, InsertResult
from taskflow.models import (
    Claim,
    ControlOutcome,
    ControlResult,
    NewTask,
    Outcome,
    Status,
    StatusEvent,
    Task,
)


@dataclass(slots=True)
class Lease:
    """Who holds the attempt in progress, and until when (on the manual clock)."""

    owner: str
    expires_at: float


class MemoryStore:
    """A faithful, single-process stand-in for `TaskStore`'s pipeline operations."""

    def __init__(self) -> None:
        self.now = 0.0
        self.tasks: dict[uuid.UUID, Task] = {}
        self.events: dict[uuid.UUID, list[StatusEvent]] = defaultdict(list)
        self.leases: dict[uuid.UUID, Lease] = {}
        self.calls: list[tuple[str, Any]] = []
        self._keys: dict[str, uuid.UUID] = {}
        self._fingerprints: dict[uuid.UUID, bytes] = {}
        self._failures: dict[str, list[BaseException]] = defaultdict(list)
        self._gates: dict[str, asyncio.Event] = {}
        self._entered: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    # -- test controls -------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the lease clock forward."""
        self.now += seconds

    def fail(self, op: str, *errors: BaseException) -> None:
        """Make the next calls of `op` raise `errors`, one each, in order."""
        self._failures[op].extend(errors)

    def hold(self, op: str) -> None:
        """Make calls of `op` take effect but not return until `let_go(op)`."""
        self._gates[op] = asyncio.Event()

    def let_go(self, op: str) -> None:
        """Let held calls of `op` proceed (and future ones run freely)."""
        self._gates.pop(op).set()

    async def entered(self, op: str) -> None:
        """Wait until `op` has been called at least once."""
        await self._entered[op].wait()

    def count(self, op: str) -> int:
        """How many times `op` was called."""
        return sum(1 for name, _ in self.calls if name == op)

    def history(self, task_id: uuid.UUID) -> list[tuple[Status, int]]:
        """The status history of a task as (status, attempt) pairs."""
        return [(e.status, e.attempt) for e in self.events[task_id]]

    async def _enter(self, op: str, args: Any) -> None:
        """The request: recorded, then it fails (changing nothing) if told to."""
        self.calls.append((op, args))
        self._entered[op].set()
        await asyncio.sleep(0)  # a store call always yields to the loop
        if self._failures[op]:
            raise self._failures[op].pop(0)

    async def _reply(self, op: str) -> None:
        """The answer, after the change took effect: late while `op` is held."""
        gate = self._gates.get(op)
        if gate is not None:
            await gate.wait()

    def _change(self, task_id: uuid.UUID, status: Status, attempt: int, **fields: Any) -> Task:
        at = datetime.now(UTC)
        task = replace(self.tasks[task_id], status=status, updated_at=at, **fields)
        self.tasks[task_id] = task
        self.events[task_id].append(StatusEvent(len(self.events[task_id]) + 1, status, attempt, at))
        return task

    # -- PipelineStore ---------------------------------------------------------------

    async def insert_tasks(
        self, batch: Sequence[NewTask], claim: CreateClaimed | None = None
    ) -> InsertResult:
        """Insert a batch; a task whose key exists (or came earlier in the batch) is skipped.

        With `claim`, the first `claim.count` tasks of the batch are created claimed."""
        await self._enter("insert_tasks", list(batch))
        created: list[Task] = []
        claimed: list[Claim] = []
        skipped: list[str] = []
        for n, new in enumerate(batch):
            key = new.idempotency_key
            if key is not None and key in self._keys:
                skipped.append(key)
                continue
            at = datetime.now(UTC)
            task = Task(
                id=new.id,
                title=new.title,
                description=new.description,
                payload=new.payload,
                status=Status.NEW,
                source=new.source,
                attempts=0,
                result=None,
                error=None,
                created_at=at,
                updated_at=at,
                started_at=None,
                finished_at=None,
            )
            self.tasks[task.id] = task
            self.events[task.id].append(StatusEvent(1, Status.NEW, 0, at))
            if key is not None:
                self._keys[key] = task.id
                self._fingerprints[task.id] = new.fingerprint()
            if claim is not None and n < claim.count:
                claimed.append(self._start_attempt(task.id, claim.owner, claim.lease_s))
                task = self.tasks[task.id]
            created.append(task)
        existing = {
            key: (self.tasks[self._keys[key]], self._fingerprints.get(self._keys[key]))
            for key in skipped
        }
        await self._reply("insert_tasks")
        return InsertResult(created, existing, claimed)

    def _start_attempt(self, task_id: uuid.UUID, owner: str, lease_s: float) -> Claim:
        attempt = self.tasks[task_id].attempts + 1
        task = self._change(
            task_id,
            Status.IN_PROGRESS,
            attempt,
            attempts=attempt,
            started_at=datetime.now(UTC),
        )
        self.leases[task_id] = Lease(owner, self.now + lease_s)
        return Claim(task_id, attempt, task.source)

    async def claim(
        self, owner: str, lease_s: float, limit: int, running: Collection[uuid.UUID] = ()
    ) -> list[tuple[Claim, bool]]:
        """Claim expired attempts (oldest lease first, not those in `running`), then new
        tasks (oldest first)."""
        await self._enter("claim", (owner, lease_s, limit))
        expired = sorted(
            (lease.expires_at, task_id)
            for task_id, lease in self.leases.items()
            if self.tasks[task_id].status is Status.IN_PROGRESS
            and lease.expires_at < self.now
            and task_id not in running
        )
        for _, task_id in expired:
            task = self.tasks[task_id]
            if task.cancel_requested_at is not None:  # ends cancelled, not attempted again
                self._change(
                    task_id,
                    Status.CANCELLED,
                    task.attempts,
                    finished_at=datetime.now(UTC),
                    cancel_requested_at=None,
                )
                del self.leases[task_id]
        expired = [(at, task_id) for at, task_id in expired if task_id in self.leases]
        fresh = [t.id for t in self.tasks.values() if t.status is Status.NEW]
        picked = [task_id for _, task_id in expired] + fresh
        claims: list[tuple[Claim, bool]] = []
        recovered = {task_id for _, task_id in expired}
        for task_id in picked[:limit]:
            claim = self._start_attempt(task_id, owner, lease_s)
            claims.append((claim, task_id in recovered))
        await self._reply("claim")
        return claims

    async def claim_new(self, ids: Sequence[uuid.UUID], owner: str, lease_s: float) -> list[Claim]:
        """Claim the given tasks that are still new."""
        await self._enter("claim_new", (list(ids), owner, lease_s))
        claims = [
            self._start_attempt(task_id, owner, lease_s)
            for task_id in ids
            if task_id in self.tasks and self.tasks[task_id].status is Status.NEW
        ]
        await self._reply("claim_new")
        return claims

    def _holds(self, task_id: uuid.UUID, owner: str, attempt: int | None = None) -> bool:
        task = self.tasks.get(task_id)
        lease = self.leases.get(task_id)
        return (
            task is not None
            and task.status is Status.IN_PROGRESS
            and lease is not None
            and lease.owner == owner
            and (attempt is None or task.attempts == attempt)
        )

    async def finish(self, outcomes: Sequence[Outcome], owner: str) -> set[tuple[uuid.UUID, int]]:
        """Write the outcomes whose attempt `owner` still holds; return (id, attempt) of each.

        An attempt already terminal counts as written (a retry of a committed write).
        """
        await self._enter("finish", (list(outcomes), owner))
        written: set[tuple[uuid.UUID, int]] = set()
        for outcome in outcomes:
            claim = outcome.claim
            task = self.tasks.get(claim.task_id)
            if task is not None and task.status.terminal and task.attempts == claim.attempt:
                written.add((claim.task_id, claim.attempt))
                continue
            if not self._holds(claim.task_id, owner, claim.attempt):
                continue
            self._change(
                claim.task_id,
                outcome.status,
                claim.attempt,
                result=outcome.result,
                error=outcome.error,
                finished_at=datetime.now(UTC),
                cancel_requested_at=None,
            )
            del self.leases[claim.task_id]
            written.add((claim.task_id, claim.attempt))
        await self._reply("finish")
        return written

    async def renew(
        self, ids: Iterable[uuid.UUID], owner: str, lease_s: float
    ) -> dict[uuid.UUID, datetime | None]:
        """Extend the leases `owner` holds; return the ids still held, with their cancel flag."""
        ids = list(ids)
        await self._enter("renew", (ids, owner, lease_s))
        kept = {
            task_id: self.tasks[task_id].cancel_requested_at
            for task_id in ids
            if self._holds(task_id, owner)
        }
        for task_id in kept:
            self.leases[task_id].expires_at = self.now + lease_s
        await self._reply("renew")
        return kept

    async def release(self, ids: Iterable[uuid.UUID], owner: str) -> set[uuid.UUID]:
        """End the leases `owner` holds now, so that any claim takes them; return their ids."""
        ids = list(ids)
        await self._enter("release", (ids, owner))
        released = {task_id for task_id in ids if self._holds(task_id, owner)}
        for task_id in released:
            self.leases[task_id].expires_at = self.now - 1e-6
        await self._reply("release")
        return released

    # -- control (the API's operations, for the actors' cancel tests) -------------------

    async def cancel(
        self, ids: Sequence[uuid.UUID], reason: str | None = None
    ) -> dict[uuid.UUID, ControlResult]:
        """`new` → `cancelled`; `in_progress` → flagged (the notification is the test's job)."""
        await self._enter("cancel", (list(ids), reason))
        results: dict[uuid.UUID, ControlResult] = {}
        for task_id in ids:
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if task.status is Status.NEW:
                task = self._change(
                    task_id, Status.CANCELLED, task.attempts, finished_at=datetime.now(UTC)
                )
                outcome = ControlOutcome.CANCELLED
            elif task.status is Status.IN_PROGRESS:
                requested = task.cancel_requested_at or datetime.now(UTC)
                task = replace(task, cancel_requested_at=requested)
                self.tasks[task_id] = task
                outcome = ControlOutcome.CANCEL_REQUESTED
            else:
                done = task.status is Status.CANCELLED
                results[task_id] = ControlResult(
                    ControlOutcome.CANCELLED if done else ControlOutcome.CONFLICT, task, False
                )
                continue
            results[task_id] = ControlResult(outcome, task)
        await self._reply("cancel")
        return results

    async def retry(
        self, ids: Sequence[uuid.UUID], reason: str | None = None
    ) -> dict[uuid.UUID, ControlResult]:
        """`failed`/`cancelled` → `new` with the attempts kept and the outcome cleared."""
        await self._enter("retry", (list(ids), reason))
        results: dict[uuid.UUID, ControlResult] = {}
        for task_id in ids:
            task = self.tasks.get(task_id)
            if task is None:
                continue
            if task.status in (Status.FAILED, Status.CANCELLED):
                task = self._change(
                    task_id, Status.NEW, task.attempts, result=None, error=None, finished_at=None
                )
                results[task_id] = ControlResult(ControlOutcome.RETRIED, task)
            else:
                results[task_id] = ControlResult(ControlOutcome.CONFLICT, task, False)
        await self._reply("retry")
        return results
