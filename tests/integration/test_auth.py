"""Tokens and roles, enforced on the server for every route.

The table-driven test is generated from the application's router: every route, with
every kind of caller (no token, a wrong one, read, write, admin), gets 401, 403 or
through as `ROUTE_ROLES` says; a route that the table does not name fails it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from structlog.testing import capture_logs

from taskflow.api.auth import (
    METRICS,
    OPEN,
    ROUTE_ROLES,
    is_loopback,
    requirement_of,
    route_pattern,
)
from taskflow.app import create_app
from taskflow.config import Role, Settings
from tests.conftest import AiohttpClient, TaskflowTestServer
from tests.integration.support import Client, MakeClient, assert_error

TOKENS = {Role.READ: "r-token-4f1a", Role.WRITE: "w-token-9c2b", Role.ADMIN: "a-token-7d3e"}
METRICS_TOKEN = "m-token-1e5f"
CALLERS: dict[str, str | None] = {
    "anonymous": None,
    "wrong": "not-a-configured-token",
    **{role.value: token for role, token in TOKENS.items()},
}
TASK_ID = str(uuid.UUID(int=7))


def secured(settings: Settings, metrics_token: str | None = None) -> Settings:
    return replace(
        settings,
        api_tokens=tuple(TOKENS.items()),
        metrics_token=metrics_token,
    )


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def routes(app: web.Application) -> list[AbstractRoute]:
    return [r for r in app.router.routes() if r.resource is not None and r.method != "HEAD"]


def example_path(route: AbstractRoute) -> str:
    """A concrete path for `route`: a task id for parameters, a real file for a directory."""
    assert route.resource is not None
    if isinstance(route.resource, web.StaticResource):
        directory = route.resource.get_info()["directory"]
        name = sorted(p.name for p in directory.iterdir() if p.is_file())[0]
        return f"{route.resource.canonical}/{name}"
    path = route.resource.canonical
    for name in route.resource.get_info().get("formatter", path).split("{")[1:]:
        path = path.replace("{" + name.split("}")[0] + "}", TASK_ID)
    return path


async def test_every_route_has_a_role_in_the_table(client: Client) -> None:
    missing = [route_pattern(r) for r in routes(client.app) if requirement_of(r) is None]
    assert not missing, f"add these to taskflow.api.auth.ROUTE_ROLES_AS_WRITTEN: {missing}"


async def test_every_route_with_every_caller(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(secured(settings))
    checked = 0
    for route in routes(client.app):
        need = requirement_of(route)
        path = example_path(route)
        for caller, token in CALLERS.items():
            headers = bearer(token)
            if route.method == "POST":
                headers["Content-Type"] = "application/json"
            body = b'{"title": "t"}' if path == "/tasks" else b"{}"
            async with asyncio.timeout(10):
                async with client.request(
                    route.method,
                    path,
                    headers=headers,
                    data=body if route.method == "POST" else None,
                ) as response:
                    status = response.status
                    if status in (401, 403):
                        await assert_error(
                            response, status, "unauthorized" if status == 401 else "forbidden"
                        )
            where = f"{route.method} {path} as {caller}"
            if need in (OPEN, METRICS):  # /metrics: no TASKFLOW_METRICS_TOKEN here
                assert status not in (401, 403), where
            elif token is None or caller == "wrong":
                assert status == 401, where
            else:
                assert isinstance(need, Role)
                allowed = Role(caller).grants(need)
                assert (status not in (401, 403)) if allowed else status == 403, (where, status)
            checked += 1
    assert checked == len(routes(client.app)) * len(CALLERS)


def test_the_table_covers_the_control_routes_before_they_exist() -> None:
    assert ROUTE_ROLES["POST", "/tasks/{}/cancel"] is Role.ADMIN
    assert ROUTE_ROLES["POST", "/tasks/{}/retry"] is Role.ADMIN
    assert ROUTE_ROLES["POST", "/tasks/cancel"] is Role.ADMIN
    assert ROUTE_ROLES["POST", "/tasks/retry"] is Role.ADMIN
    assert ROUTE_ROLES["POST", "/tasks"] is Role.WRITE
    for path in ("/events", "/stats", "/tasks/{}/events", "/tasks", "/tasks/{}"):
        assert ROUTE_ROLES["GET", path] is Role.READ
    for path in ("/dashboard", "/dashboard/static/{}", "/api/docs", "/health/live"):
        assert ROUTE_ROLES["GET", path] is OPEN


def test_roles_nest() -> None:
    assert [r.grants(Role.READ) for r in Role] == [True, True, True]
    assert [r.grants(Role.WRITE) for r in Role] == [False, True, True]
    assert [r.grants(Role.ADMIN) for r in Role] == [False, False, True]


async def test_401_says_bearer_and_403_names_the_role(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings))
    missing = await client.get("/tasks")
    await assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="taskflow"'
    wrong = await client.get("/tasks", headers=bearer("nope"))
    await assert_error(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    forbidden = await client.post("/tasks", json={"title": "t"}, headers=bearer(TOKENS[Role.READ]))
    details = await assert_error(forbidden, 403, "forbidden")
    assert details == {"required_role": "write", "role": "read"}
    listed = await client.get("/tasks", headers=bearer(TOKENS[Role.READ]))
    assert (await listed.json())["items"] == []  # the refused create stored nothing


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Basic {TOKENS[Role.ADMIN]}"},  # another scheme, a real token
        {"Authorization": f"Token {TOKENS[Role.ADMIN]}"},
        {"Authorization": f"Bearer  {TOKENS[Role.ADMIN]}x"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKENS[Role.ADMIN]},  # no scheme
        {"Cookie": f"token={TOKENS[Role.ADMIN]}; access_token={TOKENS[Role.ADMIN]}"},
        {"X-Api-Key": TOKENS[Role.ADMIN]},
    ],
    ids=["basic", "token-scheme", "wrong", "empty", "no-scheme", "cookie", "other-header"],
)
async def test_a_token_anywhere_but_the_bearer_header_is_refused(
    make_client: MakeClient, settings: Settings, headers: dict[str, str]
) -> None:
    client = await make_client(secured(settings))
    await assert_error(await client.get("/tasks", headers=headers), 401, "unauthorized")


async def test_a_token_in_the_query_string_is_refused(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings))
    for name in ("access_token", "token", "bearer"):
        response = await client.get("/tasks", params={name: TOKENS[Role.ADMIN]})
        await assert_error(response, 401, "unauthorized")


async def test_the_scheme_is_case_insensitive(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(secured(settings))
    response = await client.get("/tasks", headers={"Authorization": f"bearer {TOKENS[Role.READ]}"})
    assert response.status == 200


async def test_an_unknown_route_needs_a_token_before_it_is_404(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings))
    await assert_error(await client.get("/no/such/route"), 401, "unauthorized")
    known = await client.get("/no/such/route", headers=bearer(TOKENS[Role.READ]))
    await assert_error(known, 404, "not_found")


async def test_without_tokens_everything_is_open(client: Client) -> None:
    assert (await client.post("/tasks", json={"title": "t"})).status == 201
    assert (await client.get("/tasks")).status == 200
    assert (await client.get("/metrics")).status == 200


async def test_metrics_token_is_the_only_key_to_metrics(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings, metrics_token=METRICS_TOKEN))
    missing = await client.get("/metrics")
    await assert_error(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="taskflow"'
    admin = await client.get("/metrics", headers=bearer(TOKENS[Role.ADMIN]))
    await assert_error(admin, 401, "unauthorized")
    assert 'error="invalid_token"' in admin.headers["WWW-Authenticate"]
    scrape = await client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert scrape.status == 200
    text = await scrape.text()
    assert "taskflow_tasks_created_total" in text
    # The metrics token opens nothing else.
    await assert_error(
        await client.get("/tasks", headers=bearer(METRICS_TOKEN)), 401, "unauthorized"
    )


async def test_api_tokens_alone_leave_metrics_open(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings))  # no TASKFLOW_METRICS_TOKEN
    scrape = await client.get("/metrics")
    assert scrape.status == 200
    assert "taskflow_tasks_created_total" in await scrape.text()
    await assert_error(await client.get("/tasks"), 401, "unauthorized")


async def test_metrics_token_alone_leaves_the_api_open(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, metrics_token=METRICS_TOKEN))
    assert (await client.get("/tasks")).status == 200
    await assert_error(await client.get("/metrics"), 401, "unauthorized")
    assert (await client.get("/metrics", headers=bearer(METRICS_TOKEN))).status == 200


async def test_metrics_never_label_a_task(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(settings)
    response = await client.post("/tasks", json={"title": "label-me-not", "payload": {"k": "v"}})
    task = await response.json()
    await client.get(f"/tasks/{task['id']}")
    text = await (await client.get("/metrics")).text()
    assert task["id"] not in text
    assert "label-me-not" not in text
    assert 'route="/tasks/{task_id}"' in text


async def test_every_response_has_the_security_headers(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(secured(settings))
    for path in ("/api/docs", "/health/live", "/tasks", "/api/docs/static/swagger-ui.css"):
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
    page = await client.get("/api/docs")
    csp = page.headers["Content-Security-Policy"]
    assert page.content_type == "text/html"
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "<script>" not in await page.text()  # no inline script


async def test_the_start_up_log_says_once_whether_authentication_is_on(
    make_client: MakeClient, settings: Settings
) -> None:
    with capture_logs() as events:
        await make_client(replace(settings, host="0.0.0.0"))
        await make_client(secured(settings))
    modes = [e for e in events if e["event"].startswith("authentication ")]
    assert [(e["event"], e["log_level"]) for e in modes] == [
        ("authentication disabled", "warning"),
        ("authentication enabled", "info"),
    ]
    assert modes[1]["tokens"] == {"read": 1, "write": 1, "admin": 1}
    assert not any(token in repr(events) for token in TOKENS.values())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.2", False),
        ("taskflow.example", False),
        ("", False),
    ],
)
def test_only_a_loopback_host_counts_as_reachable_from_this_machine_alone(
    host: str, loopback: bool
) -> None:
    # Without tokens, a service on such a host logs its open API as info, not a warning.
    assert is_loopback(host) is loopback


async def test_a_route_missing_from_the_table_needs_admin(
    db_url: str, settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    async def extra(_request: web.Request) -> web.Response:
        return web.json_response({})

    app = create_app(secured(settings), poll_s=0.05)
    route = app.router.add_get("/not-in-the-table", extra)
    assert requirement_of(route) is None  # what the table test above would report
    with capture_logs() as events:
        client = await aiohttp_client(TaskflowTestServer(app))
    warned = [e for e in events if e["event"] == "routes without a role need admin"]
    assert [e["routes"] for e in warned] == [["GET /not-in-the-table"]]  # its HEAD as GET
    for role in (Role.READ, Role.WRITE):
        response = await client.get("/not-in-the-table", headers=bearer(TOKENS[role]))
        await assert_error(response, 403, "forbidden")
    admin = await client.get("/not-in-the-table", headers=bearer(TOKENS[Role.ADMIN]))
    assert admin.status == 200
