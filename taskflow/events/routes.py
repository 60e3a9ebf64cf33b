"""The live-event routes and the bus's place in the application's lifetime.

`setup_routes(app)` adds `GET /events` (before the OpenAPI document is built);
`setup(app)` adds the bus as a cleanup context after the database and the listener, and
closes every stream when shutdown begins: aiohttp would otherwise wait for open responses
until the end of the shutdown grace.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema

from taskflow.api.schemas import ErrorSchema
from taskflow.db.component import LISTENER, STORE
from taskflow.events.bus import EVENT_BUS, EventBus
from taskflow.events.messages import decode_cursor
from taskflow.events.schemas import LAST_EVENT_ID, EventsQuerySchema, stream_response
from taskflow.events.streams import global_stream, last_event_id
from taskflow.metrics import METRICS
from taskflow.models import Status


@docs(
    tags=["events"],
    operation_id="streamEvents",
    summary="Live stream of every status change",
    description="Every status change of every task, made on any instance, as it commits. "
    "Without `Last-Event-ID` the stream starts at the present; with the `id` of the last "
    "message seen it replays every change committed since, exactly once, in commit order per "
    "task. A client that does not read is disconnected (it resumes with `Last-Event-ID`).",
    parameters=[LAST_EVENT_ID],
    responses={
        200: stream_response("Changes as they commit.", "<opaque cursor>"),
        400: {"description": "Bad query or Last-Event-ID", "schema": ErrorSchema},
        503: {
            "description": "PostgreSQL unreachable or the service is stopping",
            "schema": ErrorSchema,
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                    "required": True,
                }
            },
        },
    },
)
@querystring_schema(EventsQuerySchema)
async def events(request: web.Request) -> web.StreamResponse:
    """GET /events."""
    query = request["querystring"]
    raw = last_event_id(request)
    cursor = decode_cursor(raw) if raw is not None else None
    task_id: uuid.UUID | None = query.get("task_id")
    statuses = frozenset(Status(s) for s in query["status"])
    return await global_stream(request, cursor, task_id, statuses)


def setup_routes(app: web.Application) -> None:
    """Add `GET /events` to `app`."""
    app.router.add_get("/events", events, allow_head=False)


def setup(app: web.Application) -> None:
    """Run the event bus with the application (after the database and listener exist)."""
    app.cleanup_ctx.append(_bus_ctx)
    app.on_shutdown.append(_close_streams)


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    listener, metrics = app[LISTENER], app[METRICS]
    bus = EventBus(app[STORE], listener, metrics)
    metrics.notification_queue_usage.set_function(lambda: listener.queue_usage)
    metrics.listener_reconnects.set_function(lambda: listener.reconnects)
    app[EVENT_BUS] = bus
    bus.start()
    try:
        yield
    finally:
        await bus.stop()


async def _close_streams(app: web.Application) -> None:
    bus = app.get(EVENT_BUS)
    if bus is not None:
        bus.close()
