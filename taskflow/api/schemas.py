"""marshmallow schemas of the HTTP API: query and header parameters, and the documented
shapes of responses (responses are built by `Task.to_json`, these describe them)."""

from __future__ import annotations

import marshmallow as ma

from taskflow.models import Source, Status
from taskflow.validation import IDEMPOTENCY_KEY_MAX, TaskCreateSchema, storable

__all__ = [
    "ErrorSchema",
    "EventListSchema",
    "HealthSchema",
    "IdempotencyHeaderSchema",
    "ListQuerySchema",
    "TaskCreateSchema",
    "TaskListSchema",
    "TaskSchema",
]

_STATUSES = [s.value for s in Status]


class TaskSchema(ma.Schema):
    """A task, as every route returns it."""

    id = ma.fields.UUID(required=True)
    title = ma.fields.String(required=True)
    description = ma.fields.String(allow_none=True)
    payload = ma.fields.Dict(required=True)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(_STATUSES))
    source = ma.fields.String(required=True, validate=ma.validate.OneOf([s.value for s in Source]))
    attempts = ma.fields.Integer(required=True, metadata={"minimum": 0})
    result = ma.fields.Dict(allow_none=True)
    error = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime(required=True)
    updated_at = ma.fields.AwareDateTime(required=True)
    started_at = ma.fields.AwareDateTime(allow_none=True)
    finished_at = ma.fields.AwareDateTime(allow_none=True)


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

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(_STATUSES))
    attempt = ma.fields.Integer(required=True)
    at = ma.fields.AwareDateTime(required=True)


class EventListSchema(ma.Schema):
    """The status history of a task, oldest first."""

    items = ma.fields.List(ma.fields.Nested(EventSchema), required=True)


class ErrorBodySchema(ma.Schema):
    """What went wrong."""

    code = ma.fields.String(required=True, metadata={"example": "validation_failed"})
    message = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True)


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
        load_default=None,
        validate=ma.validate.Length(max=200),
        metadata={"description": "`next_cursor` of the previous page."},
    )


class IdempotencyHeaderSchema(ma.Schema):
    """The optional `Idempotency-Key` header of `POST /tasks`."""

    class Meta:
        unknown = ma.EXCLUDE

    idempotency_key = ma.fields.String(
        data_key="Idempotency-Key",
        load_default=None,
        # Header bytes that are not UTF-8 arrive as lone surrogates, which cannot be stored.
        validate=[ma.validate.Length(min=1, max=IDEMPOTENCY_KEY_MAX), storable],
        metadata={
            "description": "A repeat with the same key and body returns the task first created "
            "(200); the same key with another body is 409. Shared with AMQP `message_id`."
        },
    )


class HealthSchema(ma.Schema):
    """A health report."""

    status = ma.fields.String(required=True, metadata={"example": "ok"})
    database = ma.fields.Dict()
    amqp = ma.fields.Dict()
