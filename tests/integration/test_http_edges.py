"""Inputs that once produced a 500 or a response its schema forbids (found by fuzzing and
review of the OpenAPI document): now each is a documented 4xx with the error shape."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


async def raw_request(client: Client, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes aiohttp's client would refuse to send; return status and body."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        async with asyncio.timeout(10):
            response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def cursor(*parts: object) -> str:
    """A cursor built like ours, from arbitrary parts."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


async def test_405_names_the_allowed_methods(client: Client) -> None:
    response = await client.put("/tasks", json={"title": "x"})
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    body = await response.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert body["error"]["details"]["allowed"] == ["GET", "POST"]


async def test_idempotency_key_that_is_not_utf8_is_a_400(client: Client) -> None:
    head = b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += b"Idempotency-Key: key-\xff\xfe\r\n"
    status, body = await raw_request(client, head, b'{"title": "x"}')
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert "Idempotency-Key" in error["details"]
    listed = await (await client.get("/tasks")).json()
    assert listed["items"] == []  # nothing was stored


async def test_idempotency_key_in_utf8_works(client: Client) -> None:
    head = b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += "Idempotency-Key: clé-é\r\n".encode()
    first, _ = await raw_request(client, head, b'{"title": "x"}')
    again, _ = await raw_request(client, head, b'{"title": "x"}')
    assert (first, again) == (201, 200)


@pytest.mark.parametrize(
    "bad",
    [
        cursor("0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"),
        cursor("9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"),
        cursor("2026-01-01T00:00:00+00:00", 5),
        cursor(["2026-01-01T00:00:00+00:00"], "00000000-0000-0000-0000-000000000000"),
        cursor("2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"),
        cursor(1, 2, 3),
        "%%%",
        "not base64 at all",
    ],
)
async def test_a_cursor_that_is_not_ours_is_a_400(client: Client, bad: str) -> None:
    response = await client.get("/tasks", params={"cursor": bad})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error == {
        "code": "bad_request",
        "message": "the cursor is not valid",
        "details": {"cursor": ["Not a valid cursor."]},
    }


async def test_an_empty_cursor_is_the_first_page(client: Client) -> None:
    assert (await client.post("/tasks", json={"title": "x"})).status == 201
    page = await (await client.get("/tasks", params={"cursor": ""})).json()
    assert len(page["items"]) == 1
