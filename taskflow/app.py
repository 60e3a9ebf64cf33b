"""The application: routes, middlewares, OpenAPI, and each component set up in turn.

Each component registers itself (aiojobs' `setup(app)` shape): its `AppKey` lives next
to it and its `setup(app)` adds its `cleanup_ctx`. They are entered in order — database,
pipeline (with its NOTIFY listener and statistics), AMQP consumer — and left in
reverse, so a failing start-up still closes what it opened and a shutdown stops intake
before the pipeline, and the pipeline before the database.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from aiohttp import web
from aiohttp_apigami import validation_middleware
from aiohttp_apigami.constants import APISPEC_PARSER

from taskflow import dashboard, metrics
from taskflow.actors import component as pipeline
from taskflow.amqp import consumer
from taskflow.api import auth, control, headers, openapi, operations, tasks
from taskflow.api.middleware import error_middleware, metrics_middleware
from taskflow.api.parser import TaskflowParser
from taskflow.config import SETTINGS, Settings
from taskflow.db import component as database
from taskflow.events import routes as events
from taskflow.validation import MAX_BODY_BYTES

# aiohttp-apigami 0.9 stores parsed data under string request keys (AppKeys in 1.x).
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_apigami")


def create_app(
    settings: Settings,
    *,
    amqp: bool = False,
    on_failure: Callable[[BaseException | None], None] | None = None,
    poll_s: float = 1.0,
    stats_s: float = pipeline.STATS_INTERVAL_S,
) -> web.Application:
    """Build the aiohttp application for `settings` (nothing is started until it runs).

    With `amqp` (as `taskflow serve` runs it) it also consumes `settings.amqp_queue`;
    without, it is the HTTP service alone and readiness reports the consumer `disabled`.
    `poll_s` is the dispatcher's longest sleep, `stats_s` the refresh period of the
    per-status gauges; tests shorten them.
    """
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[metrics_middleware, error_middleware, auth.middleware, validation_middleware],
    )
    app[SETTINGS] = settings
    metrics.setup(app)
    tasks.setup_routes(app)
    control.setup_routes(app)
    operations.setup_routes(app)
    events.setup_routes(app)
    dashboard.setup_routes(app)
    openapi.setup(app)  # last of the routes: it documents those above
    auth.setup(app, settings)
    headers.setup(app)
    app[APISPEC_PARSER] = TaskflowParser()
    database.setup(app)
    pipeline.setup(app, on_failure=on_failure, poll_s=poll_s, stats_s=stats_s)
    events.setup(app)  # after the pipeline, which runs the listener
    dashboard.setup(app)  # after the pipeline: it reports the pipeline's processors
    if amqp:
        consumer.setup(app)  # after the pipeline: on shutdown it stops before the pipeline drains
    return app
