"""The pipeline as an application component: its `AppKey` and `setup(app)`.

`setup(app)` adds the pipeline's `cleanup_ctx` (after the database's: it needs `STORE`)
and an `on_shutdown` hook that makes it stop taking work as soon as the process is told
to stop, while aiohttp still answers the requests in flight. Besides the actors the
pipeline supervises three loops: the process's event listener (whose notifications wake
the dispatcher, and on the control channel stop cancelled attempts), the refresh of the
per-status gauges, and the analyzer that keeps the planner's statistics up with a burst
(`taskflow.analyze`); and, unless `TASKFLOW_RETENTION=0`, the retention pruner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import structlog
from aiohttp import web

from taskflow.actors.cancels import CONTROL_CHANNEL, control_subscriber
from taskflow.actors.pipeline import Pipeline
from taskflow.analyze import analyzer_loops
from taskflow.config import SETTINGS
from taskflow.db.component import LISTENER, STORE
from taskflow.db.listener import EVENTS_CHANNEL
from taskflow.db.store import TaskStore
from taskflow.errors import StoreUnavailable, TaskflowError
from taskflow.metrics import METRICS, Metrics
from taskflow.retention import retention_loops

log = structlog.get_logger(__name__)

PIPELINE = web.AppKey("pipeline", Pipeline)

STATS_INTERVAL_S = 5.0


def setup(
    app: web.Application,
    *,
    on_failure: Callable[[BaseException | None], None] | None = None,
    poll_s: float = 1.0,
    stats_s: float = STATS_INTERVAL_S,
) -> None:
    """Run a `Pipeline` (under `PIPELINE`) while `app` runs; drain it on shutdown.

    `on_failure` is called if an actor dies; `poll_s` is the dispatcher's longest sleep,
    `stats_s` the refresh period of the per-status gauges (tests shorten both).
    """

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, store, metrics = app[SETTINGS], app[STORE], app[METRICS]
        listener = app[LISTENER]
        pipeline = Pipeline(store, settings, metrics, on_failure=on_failure, poll_s=poll_s)
        app[PIPELINE] = pipeline
        listener.subscribe(EVENTS_CHANNEL, _wake_on_new(pipeline))
        listener.subscribe(
            CONTROL_CHANNEL,
            control_subscriber(pipeline.attempts, metrics, pipeline.lease_keeper.renew_now),
        )
        pipeline.start(
            {
                "event-listener": listener.run(),
                "statistics": refresh_statistics(store, metrics, stats_s),
                **analyzer_loops(store),
                **retention_loops(store, metrics, settings.retention_s),
            }
        )
        try:
            yield
        finally:
            await pipeline.stop(settings.shutdown_grace_s)

    app.cleanup_ctx.append(pipeline_ctx)
    app.on_shutdown.append(_stop_taking_work)


def _wake_on_new(pipeline: Pipeline) -> Callable[[str | None], None]:
    """A subscriber that wakes the dispatcher when tasks became `new` anywhere.

    Also after the listener (re)connected (payload None): a wake-up may have been missed.
    The payload names the statuses written (`"statuses": ["new", ...]`); a plain substring
    test is enough to tell, and costs nothing per notification.
    """

    def on_event(payload: str | None) -> None:
        if payload is None or '"new"' in payload:
            pipeline.wake()

    return on_event


async def _stop_taking_work(app: web.Application) -> None:
    """First step of a shutdown, while aiohttp still finishes in-flight requests.

    The listening socket is closed by then; this makes creates on open connections get
    503 and stops claiming, and starts the grace period of running attempts.
    """
    pipeline = app.get(PIPELINE)
    if pipeline is not None:
        await pipeline.begin_shutdown(app[SETTINGS].shutdown_grace_s)


async def refresh_statistics(store: TaskStore, metrics: Metrics, every_s: float) -> None:
    """Keep the per-status and backlog-age gauges fresh without a query per scrape.

    Folds the count deltas (one instance at a time), then two small queries every
    `every_s` seconds, whatever the scrape rate; they also
    keep `taskflow_db_up` current while the pipeline is idle.
    """
    while True:
        try:
            await store.fold_counts()
            counts = await store.status_counts()
            oldest = await store.oldest_new()
        except TaskflowError as exc:
            metrics.db_up.set(0 if isinstance(exc, StoreUnavailable) else 1)
            log.debug("statistics refresh failed", error=str(exc))
        else:
            metrics.db_up.set(1)
            for status, count in counts.items():
                metrics.tasks.labels(status.value).set(count)
            age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
            metrics.oldest_new_age.set(max(age, 0.0))
        await asyncio.sleep(every_s)
