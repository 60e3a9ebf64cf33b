"""The dashboard's routes: the page (`/dashboard`, `/` redirects there), its static files
and the statistics it shows (`/stats`, `/stats/rates`).

The page gets the strict headers of the Security section (only this origin's scripts and
styles, no framing, no sniffing, no referrer) from `taskflow.api.headers`, like every
response; its static files are open, as the page is (`taskflow.api.auth`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp_apigami import docs

from taskflow.api.schemas import ErrorSchema
from taskflow.api.tasks import RETRY_AFTER_HEADER
from taskflow.dashboard.registry import REGISTRY
from taskflow.dashboard.schemas import RateSeriesSchema, StatsSchema
from taskflow.db.component import DATABASE, STORE
from taskflow.db.dashboard import RATE_KINDS, DashboardStore
from taskflow.models import Status

PAGE_PATH = "/dashboard"
STATIC_PATH = "/dashboard/static"
STATIC_DIR = Path(str(resources.files("taskflow.dashboard").joinpath("static")))

RATE_WINDOW_S = 60.0
SERIES_BUCKET_S = 15
SERIES_WINDOW_S = 15 * 60

_UNAVAILABLE = {
    503: {
        "description": "PostgreSQL unreachable; see Retry-After",
        "schema": ErrorSchema,
        "headers": RETRY_AFTER_HEADER,
    }
}


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@docs(
    tags=["dashboard"],
    operation_id="getRoot",
    summary="Redirect to the dashboard",
    responses={302: {"description": "`Location: /dashboard`"}},
)
async def root(_request: web.Request) -> web.Response:
    """GET /."""
    raise web.HTTPFound(PAGE_PATH)


@docs(
    tags=["dashboard"],
    operation_id="getDashboard",
    summary="The operators' dashboard",
    description="An HTML page (scripts and styles from `/dashboard/static/`, nothing from "
    "elsewhere) showing counts, rates, instances and tasks, updated live from `GET /events`. "
    "It is open even when tokens are set: it asks for one when a call answers 401.",
    responses={
        200: {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
)
async def dashboard_page(_request: web.Request) -> web.FileResponse:
    """GET /dashboard."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _counts(request: web.Request) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for status, n in (await request.app[STORE].status_counts()).items():
        counts[status.value] = int(n)
    return counts


@docs(
    tags=["dashboard"],
    operation_id="getStats",
    summary="Counts, rates and live instances",
    description="Counts per status, status changes per second over the last minute (all "
    "instances), and the instances that sent a heartbeat within their last three heartbeats. "
    "Its cost does not grow with the number of tasks stored.",
    responses={200: {"description": "The statistics", "schema": StatsSchema}, **_UNAVAILABLE},
)
async def stats(request: web.Request) -> web.Response:
    """GET /stats."""
    store = DashboardStore(request.app[DATABASE])
    registry = request.app[REGISTRY]
    changes = await store.recent_changes(RATE_WINDOW_S)
    instances = await store.live_instances(registry.stale_after_s)
    return _json(
        {
            "counts": await _counts(request),
            "rates": {k: round(changes[k] / RATE_WINDOW_S, 3) for k in RATE_KINDS},
            "instances": [i.to_json() for i in instances],
        }
    )


@docs(
    tags=["dashboard"],
    operation_id="getRateSeries",
    summary="Status changes per second over the last 15 minutes",
    description="All instances together, in buckets of `bucket_s` seconds, oldest first; the "
    "bucket still filling is left out.",
    responses={200: {"description": "The series", "schema": RateSeriesSchema}, **_UNAVAILABLE},
)
async def rate_series(request: web.Request) -> web.Response:
    """GET /stats/rates."""
    buckets = await DashboardStore(request.app[DATABASE]).change_series(
        SERIES_BUCKET_S, SERIES_WINDOW_S
    )
    items = [
        {"at": b.start.isoformat(), **{k: b.changes[k] / SERIES_BUCKET_S for k in RATE_KINDS}}
        for b in buckets[:-1]
    ]
    return _json({"bucket_s": SERIES_BUCKET_S, "items": items})


def setup_routes(app: web.Application) -> None:
    """Add the dashboard's routes to `app`."""
    app.router.add_get("/", root, allow_head=False)
    app.router.add_get(PAGE_PATH, dashboard_page, allow_head=False)
    app.router.add_get("/stats", stats, allow_head=False)
    app.router.add_get("/stats/rates", rate_series, allow_head=False)
    app.router.add_static(STATIC_PATH, STATIC_DIR)
