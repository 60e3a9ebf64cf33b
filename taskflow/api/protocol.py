"""The HTTP server under the application: errors of aiohttp's parser as JSON.

A request that aiohttp's parser refuses (a control byte in a header, a broken request
line, bad chunked encoding, a header over the limit) never reaches the application or
its middlewares: aiohttp's `RequestHandler.handle_error` answers it, in plain text, and
logs the exception with its traceback. `JsonErrorRequestHandler` answers it with the
contract's error shape instead (400, or 431 for a line over the limit) and logs one line
at info level without the parser's message, which quotes the raw bytes of the request
(an `Authorization` header among them).

`TaskflowRunner` is `web.AppRunner` with that handler; `run_app` is `web.run_app` with
that runner, for `taskflow serve`. Tests start their servers with the same runner.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadStatusLine,
    InvalidHeader,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from taskflow.api.headers import security_headers

log = structlog.get_logger(__name__)

# The first words of the parser's message (before the raw bytes it quotes).
_LLHTTP_REASON_MAX = 80


def parser_error(exc: BaseException | None, status: int) -> tuple[int, str, str, str]:
    """The status, error code, message and a safe reason for a request the parser refused.

    The reason never quotes the request: the parser's own message does, so only the name
    of the problem is kept from it.
    """
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers")
    ):
        return (
            431,
            "request_header_fields_too_large",
            "the request line or a header is too long, or there are too many headers",
            type(exc).__name__,
        )
    if isinstance(exc, PayloadEncodingError):
        message = "the body's framing (chunked encoding or Content-Length) is broken"
    elif isinstance(exc, BadStatusLine):
        message = "the request line is malformed"
    elif isinstance(exc, InvalidHeader):
        message = "a header is malformed"
    elif isinstance(exc, BadHttpMessage):
        message = "the request is malformed"
    else:
        message = "the request could not be read"
    reason = type(exc).__name__ if exc is not None else "unknown"
    if isinstance(exc, BadHttpMessage) and ":\n" in exc.message:
        # llhttp's messages read "Invalid header value char:\n\n  b'...'\n   ^".
        reason = exc.message.partition(":\n")[0][:_LLHTTP_REASON_MAX]
    return (status if 400 <= status < 500 else 400), "bad_request", message, reason


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering what its parser refuses in the JSON error shape."""

    def data_received(self, data: bytes) -> None:
        """Parse `data`; a body that breaks while its handler reads it fails that read.

        aiohttp queues the parser's error as the next message but leaves the request
        whose body broke waiting for the rest of it. That request's body now raises
        `RequestPayloadError` (answered 400 by the error middleware), the queued error is
        dropped, and the connection closes after that answer.
        """
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or len(self._messages) <= queued:
            return
        message, _ = self._messages[-1]
        if isinstance(message, _ErrInfo) and not request.content.is_eof():
            self._messages.pop()
            request.content.set_exception(RequestPayloadError("the body's framing is broken"))
            self.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The response to a request that failed outside the application.

        4xx: the parser refused it (the client's mistake, logged at info). 500 and 504:
        aiohttp's own failures, logged with the exception as aiohttp does, answered
        without any detail.
        """
        if status >= 500:
            if exc is not None:
                self.log_exception("Error handling request", exc_info=exc)
            code, text = "internal_error", "internal error; see the service log"
            details: dict[str, Any] = {}
        else:
            status, code, text, reason = parser_error(exc, status)
            details = {"reason": reason}
            log.info(
                "http request refused by the parser",
                status=status,
                reason=reason,
                remote=request.remote,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send the error")
        body = {"error": {"code": code, "message": text, "details": details}}
        response = web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json"
        )
        security_headers(response)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class TaskflowRunner(web.AppRunner):
    """`web.AppRunner` whose connections are handled by `JsonErrorRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server, making our handlers
        return server


async def _serve(runner: TaskflowRunner, host: str, port: int) -> None:
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()  # until SIGTERM or SIGINT cancels it, as in web.run_app
    finally:
        await runner.cleanup()


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    access_log_class: type[AbstractAccessLogger],
    shutdown_timeout: float,
) -> None:
    """`web.run_app` for `app` with `TaskflowRunner`, until SIGTERM or SIGINT.

    A failing start-up raises its exception here, after everything opened is closed.
    """
    runner = TaskflowRunner(
        app,
        handle_signals=True,
        access_log_class=access_log_class,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=75.0,  # web.run_app's
    )
    main = loop.create_task(_serve(runner, host, port), name="http-server")
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)  # the runner's cleanup: the drain
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
