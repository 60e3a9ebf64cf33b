"""The operators' dashboard: the page, its statistics and the instances registry.

`setup(app)` adds the routes and runs this instance's heartbeat from start-up (once the
pipeline exists) to shutdown, as a named task that is restarted if it ever crashes.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import web

from taskflow.actors.component import PIPELINE
from taskflow.config import SETTINGS
from taskflow.dashboard.registry import HEARTBEAT_S, REGISTRY, InstanceRegistry
from taskflow.dashboard.routes import setup_routes
from taskflow.db.component import DATABASE
from taskflow.db.dashboard import DashboardStore
from taskflow.errors import TaskflowError
from taskflow.metrics import METRICS

__all__ = ["REGISTRY", "setup"]

log = structlog.get_logger(__name__)

_HEARTBEAT_TASK = web.AppKey("instance_heartbeat", asyncio.Task[None])


async def _supervised(registry: InstanceRegistry) -> None:
    while True:
        await asyncio.sleep(registry.interval_s)
        try:
            await registry.run()
        except Exception:
            log.exception("heartbeat crashed, restarting")
            await asyncio.sleep(registry.interval_s)


def setup(app: web.Application, *, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Add the dashboard to `app`: routes now, the heartbeat between start-up and shutdown.

    Call it before `openapi.setup` (which documents the routes). The heartbeat starts in
    `on_startup`, which runs after every `cleanup_ctx` has entered (so the pipeline
    exists), and stops in `on_shutdown`, before any of them is left.
    """
    setup_routes(app)

    async def start(app: web.Application) -> None:
        store = DashboardStore(app[DATABASE])
        registry = InstanceRegistry(
            store,
            app[PIPELINE],
            app[METRICS],
            queue_capacity=app[SETTINGS].queue_size,
            interval_s=heartbeat_s,
        )
        app[REGISTRY] = registry
        try:  # listed at once, not only after the first interval
            await registry.beat_once()
        except TaskflowError as exc:
            log.warning("heartbeat failed", error=str(exc))
        app[_HEARTBEAT_TASK] = asyncio.create_task(_supervised(registry), name="instance-heartbeat")

    async def stop(app: web.Application) -> None:
        task = app.get(_HEARTBEAT_TASK)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[REGISTRY].deregister()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
