"""`POST /tasks` validation answers, whichever way (fast path or schema) a body goes."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


async def test_valid_body_with_key_is_created_once(client: Client) -> None:
    body = {"title": "resize", "description": None, "payload": {"w": 1}}
    first = await client.post("/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    again = await client.post("/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status, again.status) == (201, 200)
    task = await first.json()
    assert (await again.json())["id"] == task["id"]
    assert task["description"] is None
    assert task["payload"] == {"w": 1}


async def test_invalid_bodies_get_the_schema_messages(client: Client) -> None:
    unknown = await client.post("/tasks", json={"title": "t", "colour": "red"})
    assert unknown.status == 422
    assert "colour" in (await unknown.json())["error"]["details"]

    long_title = await client.post("/tasks", json={"title": "x" * 201})
    assert long_title.status == 422
    assert "title" in (await long_title.json())["error"]["details"]

    missing = await client.post("/tasks", data=b"", headers={"Content-Type": "application/json"})
    assert missing.status == 422
    assert "title" in (await missing.json())["error"]["details"]


async def test_bad_key_json_and_media_type(client: Client) -> None:
    key = await client.post("/tasks", json={"title": "t"}, headers={"Idempotency-Key": "k" * 201})
    assert key.status == 400
    assert (await key.json())["error"]["code"] == "bad_request"

    broken = await client.post(
        "/tasks", data=b'{"title": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400
    assert (await broken.json())["error"]["code"] == "invalid_json"

    text = await client.post("/tasks", data=b"title", headers={"Content-Type": "text/plain"})
    assert text.status == 415
