"""Middlewares: every error as the contract's JSON shape, and request metrics.

This is the one place that decides how an error looks to a client. No exception text or
stack trace of an unexpected error reaches a response; it is logged instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from taskflow import errors
from taskflow.metrics import METRICS
from taskflow.validation import MAX_BODY_BYTES

log = structlog.get_logger(__name__)

T = TypeVar("T")

# An error's answer is its class's, or the nearest base class's (`StoreConflict` is
# answered as the `Overloaded` it is).
_STATUS: dict[type[errors.TaskflowError], int] = {
    errors.BadRequest: 400,
    errors.InvalidJson: 400,
    errors.TaskNotFound: 404,
    errors.IdempotencyConflict: 409,
    errors.StatusConflict: 409,
    errors.UnsupportedMediaType: 415,
    errors.ValidationFailed: 422,
    errors.Overloaded: 503,
    errors.StoreUnavailable: 503,
}
_RETRY_AFTER: dict[type[errors.TaskflowError], str] = {
    errors.Overloaded: "1",
    errors.StoreUnavailable: "5",
}


def _answer(table: Mapping[type[errors.TaskflowError], T], exc: errors.TaskflowError) -> T | None:
    """`table`'s entry for the class of `exc` or its nearest base class, or None."""
    return next((table[kind] for kind in type(exc).__mro__ if kind in table), None)


# Methods are labels as they are; any other token a client sends counts as "other", so
# nobody can grow the number of series by inventing methods.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The contract's error body."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render TaskflowErrors, aiohttp's HTTP errors and anything unexpected as JSON."""
    try:
        return await handler(request)
    except errors.TaskflowError as exc:
        status = _answer(_STATUS, exc) or 500
        retry = _answer(_RETRY_AFTER, exc)
        if status >= 500:
            log.warning("request failed", path=request.path, code=exc.code, error=exc.message)
        if status == 500:  # not the client's doing: what went wrong stays in the log
            return error_response(500, exc.code, "internal error; see the service log")
        return error_response(
            status,
            exc.code,
            exc.message,
            exc.details,
            headers={"Retry-After": retry} if retry else None,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        details: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if exc.status == 405:
            details["allowed"] = sorted(exc.headers.get("Allow", "").split(","))
            headers["Allow"] = exc.headers.get("Allow", "")  # RFC 9110 requires it on a 405
        if exc.status == 413:
            details["max_bytes"] = MAX_BODY_BYTES
        return error_response(exc.status, code, exc.reason, details, headers)
    except RequestPayloadError:
        # The parser refused the body while the handler read it (bad chunked encoding,
        # a connection cut short): the client's doing. aiohttp's message quotes no secret
        # but says little; this one says what to fix.
        return error_response(
            400,
            "bad_request",
            "the body could not be read: its framing (chunked encoding or "
            "Content-Length) is broken",
            {"reason": "RequestPayloadError"},
        )
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the service log")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe latency by route template (`/tasks/{task_id}`, never the raw path;
    "unmatched" when no route matched: unknown path or method), method and status code."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        request.app[METRICS].http_latency(route, method, status).observe(
            time.perf_counter() - started
        )
