"""The task as the pipeline sees it, and its JSON form."""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson


class Status(enum.StrEnum):
    """The five statuses; the same strings in JSON, in the database and in metric labels.

    The set and its legal transitions are written here and once in SQL (migration 0002:
    `taskflow_statuses`, `taskflow_transition_allowed`); a test checks that they agree.
    """

    NEW = "new"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for `completed`, `failed` and `cancelled`: changed only by an explicit retry."""
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# Every legal status change. `in_progress` → `in_progress` is a lease takeover (a new
# attempt of a task whose holder died); `failed`/`cancelled` → `new` is a retry.
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.NEW, Status.IN_PROGRESS),
        (Status.NEW, Status.CANCELLED),
        (Status.IN_PROGRESS, Status.IN_PROGRESS),
        (Status.IN_PROGRESS, Status.COMPLETED),
        (Status.IN_PROGRESS, Status.FAILED),
        (Status.IN_PROGRESS, Status.CANCELLED),
        (Status.FAILED, Status.NEW),
        (Status.CANCELLED, Status.NEW),
    }
)


class Source(enum.StrEnum):
    """Where a task came in."""

    HTTP = "http"
    AMQP = "amqp"


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated create request, before it is stored."""

    title: str
    description: str | None
    payload: dict[str, Any]
    source: Source
    idempotency_key: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def fingerprint(self) -> bytes:
        """A digest of the body, so a repeated idempotency key can be told apart from a reuse."""
        body = {"title": self.title, "description": self.description, "payload": self.payload}
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True, slots=True)
class Task:
    """A stored task, as read back from PostgreSQL."""

    id: uuid.UUID
    title: str
    description: str | None
    payload: dict[str, Any]
    status: Status
    source: Source
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The task resource of the contract."""
        return {
            "id": str(self.id),
            "title": self.title,
            "description": self.description,
            "payload": self.payload,
            "status": self.status.value,
            "source": self.source.value,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "cancel_requested_at": (
                self.cancel_requested_at.isoformat() if self.cancel_requested_at else None
            ),
        }


@dataclass(frozen=True, slots=True)
class Claim:
    """A task this instance holds a lease on: the attempt number is the fencing token."""

    task_id: uuid.UUID
    attempt: int
    source: Source


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, to be written by the status writer."""

    claim: Claim
    status: Status
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One row of a task's status history: its per-task `seq` (1, 2, 3… in commit order)."""

    seq: int
    status: Status
    attempt: int
    at: datetime
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The contract's history item `{"seq", "status", "attempt", "at", "reason"}`."""
        return {
            "seq": self.seq,
            "status": self.status.value,
            "attempt": self.attempt,
            "at": self.at.isoformat(),
            "reason": self.reason,
        }


class ControlOutcome(enum.StrEnum):
    """What a cancel or retry did to one task (the bulk routes report it per id)."""

    CANCELLED = "cancelled"  # cancelled now (it was `new`), or it already was
    CANCEL_REQUESTED = "cancel_requested"  # running: its attempt is being stopped
    RETRIED = "retried"  # `failed`/`cancelled` → `new`
    CONFLICT = "conflict"  # its status forbids the action
    NOT_FOUND = "not_found"  # no such task


@dataclass(frozen=True, slots=True)
class ControlResult:
    """The outcome of a cancel or retry of one task, with the task as it is after it."""

    outcome: ControlOutcome
    task: Task
    changed: bool = True  # False when the task was left as it was (already cancelled, 409)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A history event with its place in the global stream: `(xid, id)`, in commit order
    per task (the xid of the transaction that wrote it, never lower than the task's
    previous event's), and the task it belongs to."""

    xid: int
    id: int
    task_id: uuid.UUID
    event: StatusEvent

    @property
    def position(self) -> tuple[int, int]:
        """Where the event stands in the global stream."""
        return (self.xid, self.id)

    def to_json(self) -> dict[str, Any]:
        """The history item plus `task_id`: the `data` of an SSE message."""
        return {**self.event.to_json(), "task_id": str(self.task_id)}
