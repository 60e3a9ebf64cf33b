"""Routes for operators: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs
from prometheus_client.aiohttp import make_aiohttp_handler

from taskflow.actors.component import PIPELINE
from taskflow.amqp.state import CONSUMER_STATE
from taskflow.api.schemas import LivenessSchema, ReadinessSchema
from taskflow.api.tasks import RETRY_AFTER_HEADER
from taskflow.db.component import DATABASE, DATABASE_MODE
from taskflow.errors import TaskflowError
from taskflow.metrics import METRICS

READY_TIMEOUT_S = 2.0
# What prometheus-client's handler answers, depending on the scraper's Accept header.
_METRICS_TYPES = ("text/plain", "application/openmetrics-text")


def _report(status: int, body: dict[str, Any]) -> web.Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


@docs(
    tags=["operations"],
    operation_id="getLiveness",
    summary="Liveness",
    description="200 while the process and every actor of its pipeline run (also while "
    "PostgreSQL or RabbitMQ is down); 503 when an actor died.",
    responses={
        200: {"description": "Alive", "schema": LivenessSchema},
        503: {
            "description": "An actor died",
            "schema": LivenessSchema,
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def live(request: web.Request) -> web.Response:
    """GET /health/live."""
    pipeline = request.app.get(PIPELINE)
    if pipeline is None or not pipeline.alive:
        return _report(503, {"status": "dead"})
    return _report(200, {"status": "ok"})


@docs(
    tags=["operations"],
    operation_id="getReadiness",
    summary="Readiness",
    description="200 when PostgreSQL answers with the schema in place and the pipeline "
    "accepts tasks; 503 otherwise. The RabbitMQ consumer's state is reported in `amqp` "
    "but does not affect the status: HTTP intake works without the broker.",
    responses={
        200: {"description": "Ready", "schema": ReadinessSchema},
        503: {
            "description": "Not ready",
            "schema": ReadinessSchema,
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
async def ready(request: web.Request) -> web.Response:
    """GET /health/ready."""
    app = request.app
    database: dict[str, Any] = {"mode": app.get(DATABASE_MODE, "external")}
    try:
        database["ok"] = await asyncio.wait_for(app[DATABASE].ping(), READY_TIMEOUT_S)
        if not database["ok"]:
            database["error"] = "schema missing"
    except (TaskflowError, TimeoutError) as exc:
        database.update(ok=False, error=str(exc) or "timed out")
    pipeline = app[PIPELINE]
    accepting = pipeline.alive and pipeline.accepting
    state = app.get(CONSUMER_STATE)
    body = {
        "status": "ready" if database["ok"] and accepting else "not_ready",
        "database": database,
        "pipeline": {"alive": pipeline.alive, "accepting": pipeline.accepting},
        "amqp": state.to_json() if state is not None else {"state": "disabled"},
    }
    return _report(200 if body["status"] == "ready" else 503, body)


def setup_routes(app: web.Application) -> None:
    """Add the operations routes to `app`."""
    scrape = make_aiohttp_handler(app[METRICS].registry)

    @docs(
        tags=["operations"],
        operation_id="getMetrics",
        summary="Prometheus metrics",
        description="This instance's metrics in the Prometheus text format (OpenMetrics when "
        "the scraper asks for it). The README's Operations section explains each metric.",
        responses={
            200: {
                "description": "Metrics",
                "content": {t: {"schema": {"type": "string"}} for t in _METRICS_TYPES},
            }
        },
    )
    async def metrics(request: web.Request) -> web.StreamResponse:
        return await scrape(request)

    app.router.add_get("/health/live", live, allow_head=False)
    app.router.add_get("/health/ready", ready, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
