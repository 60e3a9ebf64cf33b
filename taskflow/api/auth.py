"""Who may call what: bearer tokens with roles, checked on the server for every route.

`ROUTE_ROLES` names the requirement of each route by method and path pattern: `OPEN`,
`METRICS` (open unless `TASKFLOW_METRICS_TOKEN` is set, then that token only) or a
`Role` (`read` ⊂ `write` ⊂ `admin`). With no `TASKFLOW_API_TOKENS` every route is
open. A route that is missing from the table needs `admin` (and fails
tests/integration/test_auth.py), and a request no route matched needs `read`, so that
an anonymous caller learns nothing about the routes.

Tokens come only from the `Authorization: Bearer` header, never from a URL or a cookie,
and are compared in constant time: the SHA-256 of the presented token is compared with
that of every configured token, all of them, whatever matches.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute

from taskflow.api.middleware import error_response
from taskflow.config import Role, Settings

log = structlog.get_logger(__name__)


class Guard(enum.Enum):
    """A requirement that is not a role."""

    OPEN = "open"
    METRICS = "metrics"


OPEN = Guard.OPEN
METRICS = Guard.METRICS
Requirement = Role | Guard

# Where the dashboard's static files are served: open, like the page itself, so that it
# can load and ask for a token.
DASHBOARD_STATIC_PATH = "/dashboard/static"
SWAGGER_STATIC_PATH = "/api/docs/static"
SWAGGER_ASSETS_PATH = "/api/docs/assets"

# Path parameters are written `{name}`; their names do not matter. A static directory is
# `PREFIX/{filename}`. HEAD is checked as GET.
ROUTE_ROLES_AS_WRITTEN: dict[tuple[str, str], Requirement] = {
    ("GET", "/health/live"): OPEN,
    ("GET", "/health/ready"): OPEN,
    ("GET", "/api/docs"): OPEN,
    ("GET", "/api/docs/swagger.json"): OPEN,
    ("GET", f"{SWAGGER_STATIC_PATH}/{{filename}}"): OPEN,
    ("GET", f"{SWAGGER_ASSETS_PATH}/{{filename}}"): OPEN,
    ("GET", "/"): OPEN,  # redirects to the dashboard
    ("GET", "/dashboard"): OPEN,
    ("GET", f"{DASHBOARD_STATIC_PATH}/{{filename}}"): OPEN,
    ("GET", "/metrics"): METRICS,
    ("GET", "/tasks"): Role.READ,
    ("GET", "/tasks/{task_id}"): Role.READ,
    ("GET", "/tasks/{task_id}/events"): Role.READ,
    ("GET", "/events"): Role.READ,
    ("GET", "/stats"): Role.READ,
    ("GET", "/stats/rates"): Role.READ,
    ("POST", "/tasks"): Role.WRITE,
    ("POST", "/tasks/{task_id}/cancel"): Role.ADMIN,
    ("POST", "/tasks/{task_id}/retry"): Role.ADMIN,
    ("POST", "/tasks/cancel"): Role.ADMIN,
    ("POST", "/tasks/retry"): Role.ADMIN,
}

_PARAMETER = re.compile(r"\{[^}]*\}")


def _pattern(method: str, path: str) -> tuple[str, str]:
    return ("GET" if method == hdrs.METH_HEAD else method), _PARAMETER.sub("{}", path)


ROUTE_ROLES: dict[tuple[str, str], Requirement] = {
    _pattern(method, path): need for (method, path), need in ROUTE_ROLES_AS_WRITTEN.items()
}


def route_pattern(route: AbstractRoute) -> tuple[str, str] | None:
    """The table key of `route` (method, path with `{}` for parameters); None if unrouted."""
    resource = route.resource
    if resource is None:
        return None
    path = resource.canonical
    if isinstance(resource, web.StaticResource):
        path = f"{path}/{{filename}}"
    return _pattern(route.method, path)


def requirement_of(route: AbstractRoute) -> Requirement | None:
    """What `route` needs, from `ROUTE_ROLES`; None when the table does not name it."""
    pattern = route_pattern(route)
    return ROUTE_ROLES.get(pattern) if pattern is not None else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Authenticator:
    """The configured tokens (as digests) and the requirement of every route of one app."""

    tokens: tuple[tuple[bytes, Role], ...]
    metrics_token: bytes | None
    routes: dict[AbstractRoute, Requirement] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The tokens of `settings`; secrets are kept only as SHA-256 digests."""
        metrics = _digest(settings.metrics_token) if settings.metrics_token else None
        return cls(tuple((_digest(t), role) for role, t in settings.api_tokens), metrics)

    @property
    def enabled(self) -> bool:
        """True when API tokens are configured (else every route but /metrics is open)."""
        return bool(self.tokens)

    def role_of(self, token: str) -> Role | None:
        """The role of `token`, compared in constant time with every configured token."""
        presented = _digest(token)
        found: Role | None = None
        for known, role in self.tokens:
            if hmac.compare_digest(presented, known):
                found = role
        return found

    def is_metrics_token(self, token: str) -> bool:
        """True when `token` is `TASKFLOW_METRICS_TOKEN` (constant time)."""
        return self.metrics_token is not None and hmac.compare_digest(
            _digest(token), self.metrics_token
        )

    def requirement(self, request: web.Request) -> Requirement:
        """What `request` needs: its route's entry, `admin` if none, `read` if unrouted."""
        route = request.match_info.route
        if route.resource is None:
            return Role.READ
        return self.routes.get(route, Role.ADMIN)


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


def bearer_token(request: web.BaseRequest) -> str | None:
    """The token of the request's one `Authorization: Bearer` header, or None.

    Only the header counts: a token in the query string or a cookie is ignored.
    """
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _unauthorized(reason: str, invalid: bool) -> web.Response:
    challenge = 'Bearer realm="taskflow"'
    if invalid:
        challenge += ', error="invalid_token"'
    return error_response(
        401,
        "unauthorized",
        reason,
        {"scheme": "Bearer"},
        headers={hdrs.WWW_AUTHENTICATE: challenge},
    )


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 401 or 403 (JSON error shape) unless the request's token may use the route."""
    auth = request.app[AUTHENTICATOR]
    if not auth.enabled and auth.metrics_token is None:
        return await handler(request)
    need = auth.requirement(request)
    if need is OPEN:
        return await handler(request)
    token = bearer_token(request)
    if need is METRICS:
        if auth.metrics_token is None:
            return await handler(request)
        if token is None:
            return _unauthorized("this route needs the metrics token", invalid=False)
        if not auth.is_metrics_token(token):
            return _unauthorized("the token is not the metrics token", invalid=True)
        return await handler(request)
    assert isinstance(need, Role)
    if not auth.enabled:
        return await handler(request)
    if token is None:
        return _unauthorized(
            "this route needs a token: send 'Authorization: Bearer TOKEN'", invalid=False
        )
    role = auth.role_of(token)
    if role is None:
        return _unauthorized("the token is not valid", invalid=True)
    if not role.grants(need):
        return error_response(
            403,
            "forbidden",
            f"this route needs the {need.value} role; the token has {role.value}",
            {"required_role": need.value, "role": role.value},
        )
    return await handler(request)


def is_loopback(host: str) -> bool:
    """True when `host` (TASKFLOW_HOST) is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup(app: web.Application, settings: Settings) -> None:
    """Keep the tokens of `settings` for `middleware`.

    At start-up it maps every route to its requirement and logs once whether
    authentication is on (a warning when it is off and the service listens beyond
    loopback).
    """
    app[AUTHENTICATOR] = Authenticator.from_settings(settings)

    async def on_startup(app: web.Application) -> None:
        auth = app[AUTHENTICATOR]
        unlisted: set[str] = set()  # "GET /path" (a GET's HEAD route is the same entry)
        for route in app.router.routes():
            need = requirement_of(route)
            pattern = route_pattern(route)
            if need is None and pattern is not None:
                unlisted.add(" ".join(pattern))
            auth.routes[route] = need if need is not None else Role.ADMIN
        if unlisted:
            log.warning("routes without a role need admin", routes=sorted(unlisted))
        _log_mode(settings)

    app.on_startup.append(on_startup)


def _log_mode(settings: Settings) -> None:
    metrics = "token" if settings.metrics_token else "open"
    if settings.api_tokens:
        counts: dict[str, int] = {}
        for role, _ in settings.api_tokens:
            counts[role.value] = counts.get(role.value, 0) + 1
        log.info("authentication enabled", tokens=counts, metrics=metrics)
        return
    say = log.info if is_loopback(settings.host) else log.warning
    say(
        "authentication disabled",
        host=settings.host,
        metrics=metrics,
        hint="anyone who reaches the port may create tasks; set TASKFLOW_API_TOKENS",
    )
