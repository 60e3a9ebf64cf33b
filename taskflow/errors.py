"""The project's exceptions: one root, a few meaningful children.

The HTTP middleware maps each child to a status code and an error code in one place
(`taskflow.api.middleware`); nothing else decides how an error looks to a client.
"""

from __future__ import annotations

from typing import Any


class TaskflowError(Exception):
    """Root of every error taskflow raises on purpose."""

    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class ConfigError(TaskflowError):
    """A setting from the environment has a bad value; the message names the variable."""

    code = "bad_configuration"


class ValidationFailed(TaskflowError):
    """A task body (from HTTP or AMQP) breaks the rules of the contract."""

    code = "validation_failed"


class BadRequest(TaskflowError):
    """A query string or header cannot be understood (bad limit, unknown status, cursor)."""

    code = "bad_request"


class InvalidJson(TaskflowError):
    """A body is not valid UTF-8 JSON."""

    code = "invalid_json"


class UnsupportedMediaType(TaskflowError):
    """A body was sent with a content type other than JSON."""

    code = "unsupported_media_type"


class TaskNotFound(TaskflowError):
    """No task has the requested id."""

    code = "not_found"


class IdempotencyConflict(TaskflowError):
    """The idempotency key was used before with a different body."""

    code = "idempotency_conflict"


class Overloaded(TaskflowError):
    """The intake queue is full or the pipeline is stopping; the client should retry later."""

    code = "overloaded"


class StoreUnavailable(TaskflowError):
    """PostgreSQL cannot be reached or did not answer in time."""

    code = "database_unavailable"


class StoreError(TaskflowError):
    """PostgreSQL answered with an error that is not about reachability."""

    code = "database_error"


class StoreConflict(Overloaded):
    """PostgreSQL rolled back a statement for a conflict with a concurrent transaction (a
    deadlock, a serialization failure): nothing was written, and the same request succeeds
    when tried again. A `503` with `Retry-After`, as an overload is."""


class EmbeddedDatabaseError(TaskflowError):
    """The embedded PostgreSQL (used while DATABASE_URL is unset) could not start, join or stop.

    Raised before the service accepts anything, so it never reaches an HTTP response:
    `taskflow serve` logs its message as one line and exits 1.
    """

    code = "embedded_database_error"


class StatusConflict(TaskflowError):
    """The task's status forbids the action (a cancel of a finished task, a retry of one
    that did not fail); `details` has the current `status`."""

    code = "conflict"
