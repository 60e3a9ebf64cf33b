"""Logging: structlog events with context, JSON in production, console in a terminal.

Standard-library loggers (aiohttp, asyncpg, aio-pika) go through the same renderer, so
every line of a process has one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    """Set up structlog and the standard library's root logger."""
    level_no = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        # Module-level loggers become the configured bound logger on first use instead
        # of building a new one on every call (structlog's performance advice): a
        # filtered-out level is then a no-op method. configure_logging runs once, in
        # `serve`, before any logging.
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level_no)


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log lines as structured events."""

    _log = structlog.get_logger("taskflow.access")

    @property
    def enabled(self) -> bool:
        """False below the configured level, so aiohttp skips the access log entirely."""
        return bool(self._log.is_enabled_for(logging.INFO))

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one finished request."""
        self._log.info(
            "http request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_s=round(time, 6),
            remote=request.remote,
        )
