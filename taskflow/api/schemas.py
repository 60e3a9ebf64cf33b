"""marshmallow schemas of the HTTP API: query and header parameters, and the documented
shapes of responses (responses are built by `Task.to_json`, these describe them)."""

from __future__ import annotations

import marshmallow as ma

from taskflow.models import Source, Status
from taskflow.validation import IDEMPOTENCY_KEY_MAX, TaskCreateSchema, storable

__all__ = [
    "ErrorSchema",
    "EventListSchema",
    "IdempotencyHeaderSchema",
    "ListQuerySchema",
    "LivenessSchema",
    "ReadinessSchema",
    "TaskCreateSchema",
    "TaskListSchema",
    "TaskSchema",
]

_STATUSES = [s.value for s in Status]
# The states `ConsumerState.to_json()` reports (the consumer's phases; a unit test checks
# that the two agree, so that the API does not depend on the AMQP package).
CONSUMER_STATES = ["disabled", "connecting", "consuming", "disconnected", "stopped"]


class TaskSchema(ma.Schema):
    """A task, as every route returns it."""

    id = ma.fields.UUID(required=True)
    title = ma.fields.String(required=True)
    description = ma.fields.String(required=True, allow_none=True)
    payload = ma.fields.Dict(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(_STATUSES))
    source = ma.fields.String(required=True, validate=ma.validate.OneOf([s.value for s in Source]))
    attempts = ma.fields.Integer(required=True, metadata={"minimum": 0})
    result = ma.fields.Dict(
        required=True, allow_none=True, metadata={"description": "Set when `completed`."}
    )
    error = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "Set when `failed`."}
    )
    created_at = ma.fields.AwareDateTime(required=True)
    updated_at = ma.fields.AwareDateTime(required=True)
    started_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    finished_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    cancel_requested_at = ma.fields.AwareDateTime(
        required=True,
        allow_none=True,
        metadata={"description": "Set while a cancel of the running attempt is pending."},
    )


class TaskListSchema(ma.Schema):
    """A page of tasks, newest first."""

    items = ma.fields.List(ma.fields.Nested(TaskSchema), required=True)
    next_cursor = ma.fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last page."},
    )


class EventSchema(ma.Schema):
    """One status change."""

    seq = ma.fields.Integer(
        required=True,
        metadata={"minimum": 1, "description": "Per task: 1, 2, 3… with no gaps, in commit order."},
    )
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(_STATUSES))
    attempt = ma.fields.Integer(
        required=True,
        metadata={"minimum": 0, "description": "0 for `new`, then the attempt it belongs to."},
    )
    at = ma.fields.AwareDateTime(required=True)
    reason = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The reason given with a cancel or retry; null otherwise."},
    )


class EventListSchema(ma.Schema):
    """The status history of a task, oldest first."""

    items = ma.fields.List(ma.fields.Nested(EventSchema), required=True)


class ErrorBodySchema(ma.Schema):
    """What went wrong."""

    code = ma.fields.String(
        required=True,
        metadata={
            "description": "Stable and machine-readable: `invalid_json`, `bad_request`, "
            "`not_found`, `method_not_allowed`, `idempotency_conflict`, `conflict` (the task's "
            "status forbids a cancel or retry), `payload_too_large`, "
            "`unsupported_media_type`, `validation_failed`, `overloaded`, "
            "`database_unavailable`.",
        },
    )
    message = ma.fields.String(required=True, metadata={"description": "For people."})
    details = ma.fields.Dict(
        required=True,
        metadata={"description": "Per-field messages and other facts; `{}` when none."},
    )


class ErrorSchema(ma.Schema):
    """Every error response."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


class ListQuerySchema(ma.Schema):
    """Query parameters of `GET /tasks`."""

    class Meta:
        unknown = ma.EXCLUDE

    status = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(_STATUSES)),
        load_default=list,
        metadata={"description": "Only tasks in these statuses (repeat the parameter)."},
    )
    limit = ma.fields.Integer(
        load_default=50,
        validate=ma.validate.Range(min=1, max=1000),
        metadata={"description": "Page size, 1 to 1000."},
    )
    cursor = ma.fields.String(
        validate=ma.validate.Length(max=200),
        metadata={"description": "`next_cursor` of the previous page (empty: the first page)."},
    )
    q = ma.fields.String(
        validate=[ma.validate.Length(max=200), storable],
        metadata={
            "description": "Search: an exact task id, or else the start of the title "
            "(case-insensitive)."
        },
    )


class IdempotencyHeaderSchema(ma.Schema):
    """The optional `Idempotency-Key` header of `POST /tasks`."""

    class Meta:
        unknown = ma.EXCLUDE

    idempotency_key = ma.fields.String(
        data_key="Idempotency-Key",
        validate=[ma.validate.Length(min=1, max=IDEMPOTENCY_KEY_MAX), storable],
        metadata={
            "description": "A repeat with the same key and body returns the task first created "
            "(200); the same key with another body is 409. Shared with AMQP `message_id`."
        },
    )


class LivenessSchema(ma.Schema):
    """The body of `GET /health/live`."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["ok", "dead"]))


class DatabaseStateSchema(ma.Schema):
    """PostgreSQL as `GET /health/ready` saw it."""

    mode = ma.fields.String(required=True, validate=ma.validate.OneOf(["external", "embedded"]))
    ok = ma.fields.Boolean(required=True)
    error = ma.fields.String(metadata={"description": "Why it is not ok."})


class PipelineStateSchema(ma.Schema):
    """The in-process pipeline as `GET /health/ready` saw it."""

    alive = ma.fields.Boolean(required=True, metadata={"description": "Every actor runs."})
    accepting = ma.fields.Boolean(
        required=True, metadata={"description": "Intake takes new tasks (false while draining)."}
    )


class ConsumerStateSchema(ma.Schema):
    """The RabbitMQ consumer's state (informational: it does not affect readiness)."""

    class Meta:
        unknown = ma.INCLUDE

    state = ma.fields.String(required=True, validate=ma.validate.OneOf(CONSUMER_STATES))
    queue = ma.fields.String()
    last_error = ma.fields.String(allow_none=True)


class ReadinessSchema(ma.Schema):
    """The body of `GET /health/ready`."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["ready", "not_ready"]))
    database = ma.fields.Nested(DatabaseStateSchema, required=True)
    pipeline = ma.fields.Nested(PipelineStateSchema, required=True)
    amqp = ma.fields.Nested(ConsumerStateSchema, required=True)
