"""`taskflow cancel|retry` as a client: the bulk route, the token, chunks, the exit code."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from taskflow.control_commands import control


async def test_sends_the_token_and_chunks_of_1000_and_fails_on_not_found(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[str, str | None, dict[str, Any]]] = []

    async def bulk(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.path, request.headers.get("Authorization"), body))
        results = [
            {"id": i, "outcome": "not_found" if i == "x" else "retried", "status": None}
            for i in body["ids"]
        ]
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/tasks/retry", bulk)
    async with TestServer(app) as server:
        ids = [f"id-{n}" for n in range(1500)] + ["x"]
        code = await control(str(server.make_url("")).rstrip("/"), "retry", ids, "r", "s3cret")
    assert code == 1
    assert [len(body["ids"]) for _, _, body in seen] == [1000, 501]
    assert {(path, auth, body["reason"]) for path, auth, body in seen} == {
        ("/tasks/retry", "Bearer s3cret", "r")
    }
    assert len(capsys.readouterr().out.splitlines()) == 1501


async def test_a_refused_request_is_reported_with_its_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "unauthorized"}}, status=401)

    app = web.Application()
    app.router.add_post("/tasks/cancel", refuse)
    async with TestServer(app) as server:
        code = await control(str(server.make_url("")).rstrip("/"), "cancel", ["a"], None, None)
    assert code == 1
    assert "HTTP 401" in capsys.readouterr().err
