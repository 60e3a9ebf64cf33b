"""The control routes: cancel and retry one task, or many at once.

The statuses change in PostgreSQL (`TaskStore.cancel` / `retry`: one statement for any
number of tasks); a running attempt is stopped by the instance that runs it, on its
control notification or at its next lease renewal (`taskflow.actors.cancels`).
"""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
import orjson
import structlog
from aiohttp import web
from aiohttp_apigami import docs, json_schema

from taskflow.api.schemas import TaskSchema
from taskflow.api.tasks import TASK_ID_PARAMETER, error_responses, path_task_id
from taskflow.db.component import STORE
from taskflow.errors import StatusConflict, TaskNotFound
from taskflow.metrics import METRICS, Metrics
from taskflow.models import ControlOutcome, ControlResult
from taskflow.validation import storable

log = structlog.get_logger(__name__)

REASON_MAX = 500
BULK_MAX = 1000

_REASON = ma.fields.String(
    allow_none=True,
    load_default=None,
    validate=[ma.validate.Length(max=REASON_MAX), storable],
    metadata={
        "description": "Why, up to 500 characters; kept on the history event.",
        "example": "requested by the customer",
    },
)


class ControlBodySchema(ma.Schema):
    """The optional body of `POST /tasks/{id}/cancel` and `/retry`."""

    class Meta:
        unknown = ma.RAISE

    reason = _REASON


class BulkBodySchema(ma.Schema):
    """The body of `POST /tasks/cancel` and `POST /tasks/retry`."""

    class Meta:
        unknown = ma.RAISE

    ids = ma.fields.List(
        ma.fields.String(),
        required=True,
        validate=ma.validate.Length(min=1, max=BULK_MAX),
        metadata={
            "description": "1 to 1000 task ids; a string that is no task's id is `not_found`.",
        },
    )
    reason = _REASON


class BulkItemSchema(ma.Schema):
    """What the action did to one id."""

    id = ma.fields.String(required=True, metadata={"description": "The id as given."})
    outcome = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf([o.value for o in ControlOutcome]),
        metadata={
            "description": "`cancelled` (now, or already), `cancel_requested` (running: its "
            "attempt is being stopped), `retried`, `conflict` (its status forbids the "
            "action), `not_found`."
        },
    )
    status = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The task's status after the action; null when not found."},
    )


class BulkResultSchema(ma.Schema):
    """One result per id, in the order given."""

    results = ma.fields.List(ma.fields.Nested(BulkItemSchema), required=True)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


_ERROR_TEXTS = {
    400: "Malformed JSON",
    409: "The task's status forbids the action; `details.status` is the current one "
    "(code `conflict`)",
    503: "PostgreSQL unreachable; see Retry-After",
}


def _errors(*codes: int) -> dict[int, dict[str, Any]]:
    return error_responses(*codes, texts=_ERROR_TEXTS)


def _reason(request: web.Request) -> str | None:
    body = request.get("json")
    return body.get("reason") if isinstance(body, dict) else None


def _count(metrics: Metrics, results: list[ControlResult]) -> None:
    changed = [r for r in results if r.changed]
    for outcome in (ControlOutcome.CANCELLED, ControlOutcome.CANCEL_REQUESTED):
        n = sum(1 for r in changed if r.outcome is outcome)
        if n:
            metrics.cancels.labels(outcome.value).inc(n)
    retried = sum(1 for r in changed if r.outcome is ControlOutcome.RETRIED)
    if retried:
        metrics.retries.inc(retried)


def _one(result: ControlResult | None, task_id: uuid.UUID, action: str) -> web.Response:
    if result is None:
        raise TaskNotFound(f"no task has id {task_id}", {"id": str(task_id)})
    task = result.task
    if result.outcome is ControlOutcome.CONFLICT:
        raise StatusConflict(
            f"the task is {task.status.value}: it cannot be {action}",
            {"status": task.status.value},
        )
    log.info(
        "control request",
        action=action,
        task_id=str(task_id),
        outcome=result.outcome.value,
        changed=result.changed,
    )
    status = 202 if result.outcome is ControlOutcome.CANCEL_REQUESTED else 200
    return _json(task.to_json(), status)


@docs(
    tags=["control"],
    operation_id="cancelTask",
    summary="Cancel a task",
    description="A `new` task becomes `cancelled` at once (200). For an `in_progress` task the "
    "cancel is requested (202, `cancel_requested_at` set): the instance running its attempt "
    "stops it and the task becomes `cancelled` within a second (within a lease renewal "
    "interval if a notification is lost); if the attempt finished first, its outcome "
    "stands. An already `cancelled` task is returned unchanged (200); a `completed` or "
    "`failed` one is a 409.",
    parameters=[TASK_ID_PARAMETER],
    responses={
        200: {"description": "Cancelled (now, or already)", "schema": TaskSchema},
        202: {"description": "Running: the cancel is requested", "schema": TaskSchema},
        **_errors(400, 404, 409, 413, 415, 422, 503),
    },
)
@json_schema(ControlBodySchema, example={"reason": "requested by the customer"})
async def cancel_task(request: web.Request) -> web.Response:
    """POST /tasks/{task_id}/cancel."""
    task_id = path_task_id(request)
    results = await request.app[STORE].cancel([task_id], _reason(request))
    _count(request.app[METRICS], list(results.values()))
    return _one(results.get(task_id), task_id, "cancelled")


@docs(
    tags=["control"],
    operation_id="retryTask",
    summary="Retry a task",
    description="A `failed` or `cancelled` task becomes `new` again (200) and is processed "
    "again: its next attempt is number `attempts + 1`, its history keeps every earlier "
    "event, and `result`, `error`, `finished_at` and `cancel_requested_at` are cleared. "
    "Any other status is a 409.",
    parameters=[TASK_ID_PARAMETER],
    responses={
        200: {"description": "Retried: the task, `new` again", "schema": TaskSchema},
        **_errors(400, 404, 409, 413, 415, 422, 503),
    },
)
@json_schema(ControlBodySchema, example={"reason": "the upstream service is back"})
async def retry_task(request: web.Request) -> web.Response:
    """POST /tasks/{task_id}/retry."""
    task_id = path_task_id(request)
    results = await request.app[STORE].retry([task_id], _reason(request))
    _count(request.app[METRICS], list(results.values()))
    return _one(results.get(task_id), task_id, "retried")


def _parse_ids(raw: list[str]) -> list[uuid.UUID | None]:
    ids: list[uuid.UUID | None] = []
    for text in raw:
        try:
            ids.append(uuid.UUID(text))
        except ValueError:
            ids.append(None)
    return ids


async def _bulk(request: web.Request, action: str) -> web.Response:
    body = request["json"]
    raw: list[str] = body["ids"]
    ids = _parse_ids(raw)
    known = [i for i in ids if i is not None]
    store = request.app[STORE]
    run = store.cancel if action == "cancel" else store.retry
    results = await run(known, body.get("reason")) if known else {}
    _count(request.app[METRICS], list(results.values()))
    items = []
    for text, task_id in zip(raw, ids, strict=True):
        result = results.get(task_id) if task_id is not None else None
        if result is None:
            items.append({"id": text, "outcome": ControlOutcome.NOT_FOUND.value, "status": None})
        else:
            items.append(
                {"id": text, "outcome": result.outcome.value, "status": result.task.status.value}
            )
    log.info("bulk control request", action=action, count=len(raw))
    return _json({"results": items})


_BULK_RESPONSES = {
    200: {"description": "One result per id, in the order given", "schema": BulkResultSchema},
    **_errors(400, 413, 415, 422, 503),
}


@docs(
    tags=["control"],
    operation_id="cancelTasks",
    summary="Cancel many tasks",
    description="Cancels each task as `POST /tasks/{id}/cancel` does, in one statement, and "
    "reports per id: `cancelled`, `cancel_requested`, `conflict` or `not_found`.",
    responses=_BULK_RESPONSES,
)
@json_schema(BulkBodySchema, required=True, example={"ids": [str(uuid.UUID(int=1))]})
async def cancel_tasks(request: web.Request) -> web.Response:
    """POST /tasks/cancel."""
    return await _bulk(request, "cancel")


@docs(
    tags=["control"],
    operation_id="retryTasks",
    summary="Retry many tasks",
    description="Retries each task as `POST /tasks/{id}/retry` does, in one statement, and "
    "reports per id: `retried`, `conflict` or `not_found`.",
    responses=_BULK_RESPONSES,
)
@json_schema(BulkBodySchema, required=True, example={"ids": [str(uuid.UUID(int=1))]})
async def retry_tasks(request: web.Request) -> web.Response:
    """POST /tasks/retry."""
    return await _bulk(request, "retry")


def setup_routes(app: web.Application) -> None:
    """Add the control routes to `app`."""
    app.router.add_post("/tasks/cancel", cancel_tasks)
    app.router.add_post("/tasks/retry", retry_tasks)
    app.router.add_post("/tasks/{task_id}/cancel", cancel_task)
    app.router.add_post("/tasks/{task_id}/retry", retry_task)
