"""The documented shapes of the live-event routes (OpenAPI): the message, the query."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from taskflow.api.schemas import EventSchema
from taskflow.models import Status

EVENT_STREAM = "text/event-stream"

LAST_EVENT_ID: dict[str, Any] = {
    "in": "header",
    "name": "Last-Event-ID",
    "required": False,
    "schema": {"type": "string"},
    "description": "The `id` of the last message seen: the stream resumes after it.",
}


class StreamEventSchema(EventSchema):
    """The `data` of an SSE message: a history item plus its task."""

    task_id = ma.fields.UUID(required=True)


class EventsQuerySchema(ma.Schema):
    """Query parameters of `GET /events`."""

    class Meta:
        unknown = ma.EXCLUDE

    status = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf([s.value for s in Status])),
        load_default=list,
        metadata={"description": "Only changes to these statuses (repeat the parameter)."},
    )
    task_id = ma.fields.UUID(metadata={"description": "Only the changes of this task."})


def stream_response(description: str, id_text: str) -> dict[str, Any]:
    """The documented 200 of an SSE route: `text/event-stream` of `StreamEvent` messages."""
    return {
        "description": f"{description} A Server-Sent Events stream: `retry:` first, a comment "
        "line at least every 15 s while idle, and per change a message with "
        f"`id: {id_text}`, `event: status` and `data:` the JSON below.",
        "content": {EVENT_STREAM: {"schema": StreamEventSchema}},
        "headers": {
            "Cache-Control": {"schema": {"type": "string", "enum": ["no-cache"]}},
            "X-Accel-Buffering": {"schema": {"type": "string", "enum": ["no"]}},
        },
    }


TASK_LAST_EVENT_ID: dict[str, Any] = {
    **LAST_EVENT_ID,
    "description": "Stream only: the `seq` of the last event seen (the stream resumes after it).",
}
