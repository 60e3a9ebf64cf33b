"""The operators' dashboard: the page, its statistics and the instances registry.

`setup_routes(app)` adds the page, its static files and `/stats` (before `openapi.setup`,
which documents them); `setup(app)` runs this instance's heartbeat while the app runs,
as a `cleanup_ctx` entered after the pipeline's (it reports the pipeline's processors)
and left before it: a stopping instance keeps reporting while it drains, then removes
itself from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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

__all__ = ["REGISTRY", "setup", "setup_routes"]

log = structlog.get_logger(__name__)


async def _supervised(registry: InstanceRegistry) -> None:
    """The heartbeat loop, restarted (after a pause) if it ever crashes."""
    while True:
        await asyncio.sleep(registry.interval_s)
        try:
            await registry.run()
        except Exception:
            log.exception("dashboard.heartbeat_crashed", instance=registry.instance_id)


def setup(app: web.Application, *, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Register this instance and heartbeat while `app` runs (call after the pipeline's
    `setup`)."""

    async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
        registry = InstanceRegistry(
            DashboardStore(app[DATABASE]),
            app[PIPELINE],
            app[METRICS],
            queue_capacity=app[SETTINGS].queue_size,
            interval_s=heartbeat_s,
        )
        app[REGISTRY] = registry
        try:  # listed at once, not only after the first interval
            await registry.beat_once()
        except TaskflowError as exc:
            log.warning("dashboard.heartbeat_failed", error=str(exc))
        task = asyncio.create_task(_supervised(registry), name="instance-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await registry.deregister()

    app.cleanup_ctx.append(heartbeat_ctx)
