"""The task routes: create, read one, its history, and list with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp_apigami import docs, headers_schema, json_schema, querystring_schema

from taskflow.actors.component import PIPELINE
from taskflow.api.schemas import (
    ErrorSchema,
    EventListSchema,
    IdempotencyHeaderSchema,
    ListQuerySchema,
    TaskCreateSchema,
    TaskListSchema,
    TaskSchema,
)
from taskflow.db.component import DATABASE, STORE
from taskflow.db.dashboard import DashboardStore
from taskflow.errors import BadRequest, TaskNotFound
from taskflow.events.schemas import TASK_LAST_EVENT_ID, stream_response
from taskflow.events.streams import task_stream, wants_stream
from taskflow.models import Source, Status, Task
from taskflow.validation import build_new_task


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
        "required": True,
    }
}


ERROR_TEXTS = {
    400: "Malformed JSON, query or header",
    404: "No such task",
    409: "Idempotency key reused with a different body",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Validation failed; `details` has a message per field",
    503: "Overloaded, PostgreSQL unreachable, or a write rolled back; see Retry-After",
}


def error_responses(*codes: int, texts: dict[int, str] | None = None) -> dict[int, dict[str, Any]]:
    """The documented error responses (all with the error shape) for `codes`; `texts`
    replaces the description of some codes for a route."""
    described = {**ERROR_TEXTS, **(texts or {})}
    responses: dict[int, dict[str, Any]] = {
        code: {"description": described[code], "schema": ErrorSchema} for code in codes
    }
    if 503 in responses:
        responses[503]["headers"] = RETRY_AFTER_HEADER
    return responses


def encode_cursor(task: Task) -> str:
    """An opaque cursor pointing just after `task` in newest-first order."""
    raw = orjson.dumps([task.created_at.isoformat(), str(task.id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor points after; `BadRequest` when it is not one of ours."""
    invalid = BadRequest("the cursor is not valid", {"cursor": ["Not a valid cursor."]})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, task_id = orjson.loads(raw)
        if not isinstance(created_at, str) or not isinstance(task_id, str):
            raise invalid
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise invalid
        # In UTC, so a time PostgreSQL cannot take (an offset past year 1 or 9999) fails here.
        return when.astimezone(UTC), uuid.UUID(task_id)
    except (binascii.Error, ValueError, TypeError, OverflowError, orjson.JSONDecodeError):
        raise invalid from None


TASK_ID_PARAMETER = {
    "in": "path",
    "name": "task_id",
    "required": True,
    "description": "The task's `id` (a malformed one is answered 404, like an unknown one).",
    "schema": {"type": "string", "format": "uuid"},
    "example": "0b5c2e1e-8a53-4d8e-9b3f-2f1d6c7a9e10",
}


def path_task_id(request: web.Request) -> uuid.UUID:
    """The `task_id` of the route; `TaskNotFound` for a malformed one (404, like unknown)."""
    raw = request.match_info["task_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise TaskNotFound(f"no task has id {raw[:100]!r}", {"id": raw[:100]}) from None


@docs(
    tags=["tasks"],
    operation_id="createTask",
    summary="Create a task",
    description="Stores the task (status `new`) and returns it once committed. "
    "It is then processed: `new` → `in_progress` → `completed` or `failed`.",
    responses={
        201: {
            "description": "Created",
            "schema": TaskSchema,
            "headers": {
                "Location": {
                    "description": "URL of the task: `/tasks/{id}`.",
                    "schema": {"type": "string"},
                    "required": True,
                }
            },
        },
        200: {
            "description": "A repeat of an earlier request with the same Idempotency-Key "
            "and body: the task it created",
            "schema": TaskSchema,
            "headers": {
                "Location": {
                    "description": "URL of the task: `/tasks/{id}`.",
                    "schema": {"type": "string"},
                    "required": True,
                }
            },
        },
        **error_responses(400, 409, 413, 415, 422, 503),
    },
)
@headers_schema(IdempotencyHeaderSchema)
@json_schema(
    TaskCreateSchema,
    required=True,
    example={"title": "resize", "description": "Resize to 100 px", "payload": {"w": 100}},
)
async def create_task(request: web.Request) -> web.Response:
    """POST /tasks."""
    key: str | None = request["headers"].get("idempotency_key")
    new = build_new_task(request["json"], Source.HTTP, key)
    accepted = await request.app[PIPELINE].submit(new)
    task = accepted.task
    return _json(
        task.to_json(),
        status=201 if accepted.created else 200,
        headers={"Location": f"/tasks/{task.id}"},
    )


@docs(
    tags=["tasks"],
    operation_id="getTask",
    summary="Get a task",
    parameters=[TASK_ID_PARAMETER],
    responses={200: {"description": "The task", "schema": TaskSchema}, **error_responses(404, 503)},
)
async def get_task(request: web.Request) -> web.Response:
    """GET /tasks/{task_id}."""
    task_id = path_task_id(request)
    task = await request.app[STORE].get_task(task_id)
    if task is None:
        raise TaskNotFound(f"no task has id {task_id}", {"id": str(task_id)})
    return _json(task.to_json())


@docs(
    tags=["tasks"],
    operation_id="getTaskEvents",
    summary="Status history of a task, or its live stream",
    description="The history as JSON; with `Accept: text/event-stream` a Server-Sent Events "
    "stream of the events after `Last-Event-ID` (a `seq`; all without one), then each new "
    "one as it commits on any instance, ending after a terminal event.",
    parameters=[TASK_ID_PARAMETER, TASK_LAST_EVENT_ID],
    responses={
        200: {
            "description": "Status changes, oldest first (JSON), or the live stream",
            "content": {
                "application/json": {"schema": EventListSchema},
                **stream_response("", "<seq>")["content"],
            },
        },
        204: {"description": "Stream only: Last-Event-ID is the last event of a terminal task"},
        **error_responses(400, 404, 503),
    },
)
async def task_events(request: web.Request) -> web.StreamResponse:
    """GET /tasks/{task_id}/events (a stream with `Accept: text/event-stream`)."""
    task_id = path_task_id(request)
    if wants_stream(request):
        return await task_stream(request, task_id)
    store = request.app[STORE]
    events = await store.task_events(task_id)
    if not events and await store.get_task(task_id) is None:
        raise TaskNotFound(f"no task has id {task_id}", {"id": str(task_id)})
    return _json({"items": [e.to_json() for e in events]})


@docs(
    tags=["tasks"],
    operation_id="listTasks",
    summary="List tasks",
    description="Newest first, `limit` per page; follow `next_cursor` for the next page. "
    "`q` finds a task by its exact id, or else the tasks whose title starts with it.",
    responses={
        200: {"description": "A page of tasks", "schema": TaskListSchema},
        **error_responses(400, 503),
    },
)
@querystring_schema(ListQuerySchema)
async def list_tasks(request: web.Request) -> web.Response:
    """GET /tasks."""
    query = request["querystring"]
    cursor: str | None = query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    statuses = sorted({Status(s) for s in query["status"]})
    limit: int = query["limit"]
    search: str | None = query.get("q")
    if search:
        tasks = await _search(request, search, statuses, after, limit + 1)
    else:
        tasks = await request.app[STORE].list_tasks(statuses, after, limit + 1)
    page, more = tasks[:limit], len(tasks) > limit
    return _json(
        {
            "items": [t.to_json() for t in page],
            "next_cursor": encode_cursor(page[-1]) if more else None,
        }
    )


async def _search(
    request: web.Request,
    q: str,
    statuses: list[Status],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Task]:
    """`q` is an exact task id (that task, if it passes the filter) or a title prefix."""
    try:
        task_id = uuid.UUID(q)
    except ValueError:
        pass
    else:
        task = await request.app[STORE].get_task(task_id)
        if task is not None:
            wanted = not statuses or task.status in statuses
            return [task] if wanted and after is None else []
    return await DashboardStore(request.app[DATABASE]).search_by_title(
        q, [s.value for s in statuses], after, limit
    )


def setup_routes(app: web.Application) -> None:
    """Add the task routes to `app`."""
    app.router.add_post("/tasks", create_task)
    app.router.add_get("/tasks", list_tasks, allow_head=False)
    # Not `/tasks/cancel` or `/tasks/retry`: those paths are the bulk actions' (POST only),
    # and as in OpenAPI a concrete path wins over a templated one (405 for a GET there).
    app.router.add_get("/tasks/{task_id:(?!(?:cancel|retry)$)[^{}/]+}", get_task, allow_head=False)
    app.router.add_get("/tasks/{task_id}/events", task_events, allow_head=False)
