"""Bad input of every kind: the right status, the contract's error shape, never a 500.

Also the edge cases found by fuzzing and reviewing the OpenAPI document (405s name the
allowed methods, idempotency keys outside ASCII, cursors that are not ours)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from taskflow_bench.harness.metrics import metric
from taskflow_bench.harness.tasks import wait_terminal
from tests.integration.support import Client, assert_error

JSON = {"Content-Type": "application/json"}
TASK_ID = str(uuid.UUID(int=42))


@dataclass(frozen=True)
class Case:
    """One bad request and the error it must get."""

    name: str
    status: int
    code: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"
    path: str = "/tasks"
    field: str | None = None  # the key `details` must name

    def __str__(self) -> str:
        return self.name


def body(value: Any) -> bytes:
    return json.dumps(value).encode()  # also what orjson refuses to encode


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def cursor_of(value: object) -> str:
    """A cursor built like ours (base64 of JSON), from an arbitrary value."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def invalid(name: str, raw: bytes) -> Case:
    return Case(name, 400, "invalid_json", raw)


def unprocessable(name: str, raw: bytes, where: str) -> Case:
    return Case(name, 422, "validation_failed", raw, field=where)


def bad_query(name: str, query: str, where: str) -> Case:
    return Case(name, 400, "bad_request", method="GET", path=f"/tasks?{query}", field=where)


def not_found(name: str, path: str, method: str = "GET") -> Case:
    return Case(name, 404, "not_found", method=method, path=path)


def not_allowed(name: str, method: str, path: str) -> Case:
    return Case(name, 405, "method_not_allowed", method=method, path=path, field="allowed")


CASES = [
    # Not JSON at all (400).
    invalid("broken JSON", b'{"title": '),
    invalid("single quotes", b"{'title': 'x'}"),
    invalid("trailing garbage", b'{"title": "x"} {}'),
    invalid("invalid UTF-8", b'{"title": "caf\xe9"}'),
    invalid("invalid UTF-8 in a payload key", b'{"title": "x", "payload": {"\xff": 1}}'),
    invalid("UTF-8 BOM", b'\xef\xbb\xbf{"title": "x"}'),
    invalid("NaN", b'{"title": "x", "payload": {"n": NaN}}'),
    invalid("Infinity", b'{"title": "x", "payload": {"n": Infinity}}'),
    invalid("-Infinity", b'{"title": "x", "payload": {"n": -Infinity}}'),
    invalid("number overflowing a double", b'{"title": "x", "payload": {"n": 1e999}}'),
    invalid("nested 5000 deep", b'{"title": "x", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    invalid(
        "nested 5000 deep with a lone surrogate",
        b'{"title": "\\ud800", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ),
    # JSON, but not a task (422).
    unprocessable("empty body", b"", "title"),
    unprocessable("JSON null", b"null", "_schema"),
    unprocessable("JSON array", b'[{"title": "x"}]', "_schema"),
    unprocessable("JSON string", b'"x"', "_schema"),
    unprocessable("JSON number", b"42", "_schema"),
    unprocessable("JSON true", b"true", "_schema"),
    unprocessable("no title", body({"description": "d"}), "title"),
    unprocessable("title empty", body({"title": ""}), "title"),
    unprocessable("title 201 characters", body({"title": "t" * 201}), "title"),
    unprocessable("title null", body({"title": None}), "title"),
    unprocessable("title number", body({"title": 1}), "title"),
    unprocessable("title boolean", body({"title": True}), "title"),
    unprocessable("title array", body({"title": ["x"]}), "title"),
    unprocessable("title object", body({"title": {"x": 1}}), "title"),
    unprocessable("description number", body({"title": "x", "description": 1}), "description"),
    unprocessable("description array", body({"title": "x", "description": []}), "description"),
    unprocessable(
        "description 10001 characters",
        body({"title": "x", "description": "d" * 10_001}),
        "description",
    ),
    unprocessable("payload null", body({"title": "x", "payload": None}), "payload"),
    unprocessable("payload array", body({"title": "x", "payload": [1]}), "payload"),
    unprocessable("payload string", body({"title": "x", "payload": "{}"}), "payload"),
    unprocessable("payload number", body({"title": "x", "payload": 1}), "payload"),
    unprocessable(
        "payload over 64 KiB",
        body({"title": "x", "payload": {"k": "x" * (65537 - len(b'{"k":""}'))}}),
        "payload",
    ),
    unprocessable(
        "payload nested 300 deep", body({"title": "x", "payload": nested(300)}), "payload"
    ),
    unprocessable("unknown field", body({"title": "x", "priority": 1}), "priority"),
    unprocessable("unknown field id", body({"title": "x", "id": TASK_ID}), "id"),
    unprocessable("unknown field status", body({"title": "x", "status": "completed"}), "status"),
    unprocessable("NUL in title", b'{"title": "a\\u0000b"}', "title"),
    unprocessable("NUL in description", b'{"title": "x", "description": "\\u0000"}', "description"),
    unprocessable("NUL in payload key", b'{"title": "x", "payload": {"\\u0000": 1}}', "payload"),
    unprocessable(
        "NUL in payload value", b'{"title": "x", "payload": {"k": "\\u0000"}}', "payload"
    ),
    unprocessable(
        "NUL deep in payload", b'{"title": "x", "payload": {"k": [{"j": ["\\u0000"]}]}}', "payload"
    ),
    unprocessable("lone surrogate in title", b'{"title": "\\ud800"}', "title"),
    unprocessable(
        "lone surrogate in description", b'{"title": "x", "description": "\\udfff"}', "description"
    ),
    unprocessable(
        "lone surrogate in payload key", b'{"title": "x", "payload": {"\\udc00": 1}}', "payload"
    ),
    unprocessable(
        "lone surrogate in payload value", b'{"title": "x", "payload": {"k": "\\ud83d"}}', "payload"
    ),
    # Size and media type.
    Case("body over 256 KiB", 413, "payload_too_large", b'{"title": "' + b"x" * 300_000 + b'"}'),
    Case(
        "text/plain",
        415,
        "unsupported_media_type",
        b'{"title": "x"}',
        {"Content-Type": "text/plain"},
    ),
    Case(
        "form-encoded",
        415,
        "unsupported_media_type",
        b"title=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case("no content type", 415, "unsupported_media_type", b'{"title": "x"}', {}),
    # Headers.
    Case(
        "Idempotency-Key over 200 characters",
        400,
        "bad_request",
        body({"title": "x"}),
        {**JSON, "Idempotency-Key": "k" * 201},
        field="Idempotency-Key",
    ),
    Case(
        "Idempotency-Key empty",
        400,
        "bad_request",
        body({"title": "x"}),
        {**JSON, "Idempotency-Key": ""},
        field="Idempotency-Key",
    ),
    # Query parameters of GET /tasks.
    bad_query("limit 0", "limit=0", "limit"),
    bad_query("limit 1001", "limit=1001", "limit"),
    bad_query("limit -1", "limit=-1", "limit"),
    bad_query("limit abc", "limit=abc", "limit"),
    bad_query("limit 1.5", "limit=1.5", "limit"),
    bad_query("limit empty", "limit=", "limit"),
    bad_query("unknown status", "status=done", "status"),
    bad_query("status in capitals", "status=NEW", "status"),
    bad_query("one unknown status among good ones", "status=new&status=nope", "status"),
    bad_query("garbage cursor", "cursor=garbage", "cursor"),
    bad_query("cursor of another shape", f"cursor={cursor_of({'page': 2})}", "cursor"),
    bad_query(
        "cursor out of range",
        f"cursor={cursor_of(['0001-01-01T00:00:00+14:00', TASK_ID])}",
        "cursor",
    ),
    bad_query("cursor over 200 characters", "cursor=" + "A" * 201, "cursor"),
    # Task ids and routes.
    not_found("unknown task", f"/tasks/{TASK_ID}"),
    not_found("events of an unknown task", f"/tasks/{TASK_ID}/events"),
    not_found("malformed id", "/tasks/not-a-uuid"),
    not_found("numeric id", "/tasks/12345"),
    not_found("id with a NUL", "/tasks/%00"),
    not_found("id with invalid UTF-8", "/tasks/%ff%fe"),
    not_found("id too long", f"/tasks/{TASK_ID}{TASK_ID}"),
    not_found("events of a malformed id", "/tasks/not-a-uuid/events"),
    not_found("unknown route", "/nope"),
    not_found("unknown sub-route", f"/tasks/{TASK_ID}/events/1"),
    not_found("POST to an unknown route", "/task", method="POST"),
    not_allowed("DELETE /tasks", "DELETE", "/tasks"),
    not_allowed("PUT a task", "PUT", f"/tasks/{TASK_ID}"),
    not_allowed("POST to a task", "POST", f"/tasks/{TASK_ID}"),
    not_allowed("DELETE events", "DELETE", f"/tasks/{TASK_ID}/events"),
    not_allowed("POST /health/live", "POST", "/health/live"),
    not_allowed("PATCH /metrics", "PATCH", "/metrics"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_bad_input(client: Client, case: Case) -> None:
    response = await client.request(case.method, case.path, data=case.body, headers=case.headers)
    details = await assert_error(response, case.status, case.code)
    if case.field is not None:
        assert case.field in details, details
    if case.status == 405:
        assert case.method not in details["allowed"]
    assert await metric(client, "taskflow_tasks_created_total", source="http") == 0


async def raw_request(client: Client, head: bytes, payload: bytes) -> tuple[int, bytes]:
    """Send bytes the HTTP client would not send; return (status, body)."""
    assert client.server.host is not None
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(payload) + payload
        )
        await writer.drain()
        async with asyncio.timeout(30):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_an_idempotency_key_that_is_not_utf8_is_a_bad_request(client: Client) -> None:
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: key-\xff\xfe\r\n"
    )
    status, answer = await raw_request(client, head, b'{"title": "x"}')
    assert status == 400, answer
    error = orjson.loads(answer)["error"]
    assert error["code"] == "bad_request"
    assert "Idempotency-Key" in error["details"]
    listed = await (await client.get("/tasks")).json()
    assert listed["items"] == []  # nothing was stored


async def test_an_idempotency_key_in_utf8_works(client: Client) -> None:
    head = b"POST /tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += "Idempotency-Key: clé-é\r\n".encode()
    first, _ = await raw_request(client, head, b'{"title": "x"}')
    again, _ = await raw_request(client, head, b'{"title": "x"}')
    assert (first, again) == (201, 200)


async def test_405_names_the_allowed_methods(client: Client) -> None:
    response = await client.put("/tasks", json={"title": "x"})
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    details = await assert_error(response, 405, "method_not_allowed")
    assert details["allowed"] == ["GET", "POST"]


NIL = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    "bad",
    [
        cursor_of(["0001-01-01T00:00:00+14:00", NIL]),
        cursor_of(["9999-12-31T23:59:59-14:00", NIL]),
        cursor_of(["2026-01-01T00:00:00+00:00", 5]),
        cursor_of([["2026-01-01T00:00:00+00:00"], NIL]),
        cursor_of(["2026-01-01T00:00:00", NIL]),
        cursor_of([1, 2, 3]),
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


async def test_a_bad_request_does_not_fail_the_creates_batched_with_it(client: Client) -> None:
    """Bad input stops at validation: requests sharing its intake batch are unaffected."""
    head = (
        b"POST /tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: \xff\r\n"
    )
    deep = {"title": "deep", "payload": nested(300)}
    poison = [
        asyncio.create_task(raw_request(client, head, b'{"title": "poison"}')),
        asyncio.create_task(client.post("/tasks", json=deep)),
        asyncio.create_task(client.post("/tasks", json=deep, headers={"Idempotency-Key": "k"})),
    ]
    good = await asyncio.gather(
        *(client.post("/tasks", json={"title": f"g{i}"}) for i in range(30))
    )
    await asyncio.gather(*poison)
    assert [r.status for r in good] == [201] * 30
    ids = [(await r.json())["id"] for r in good]
    for task_id in ids:
        assert (await wait_terminal(client, task_id))["status"] == "completed"
    assert (await client.get("/health/live")).status == 200


async def test_no_bad_input_leaves_the_service_broken(client: Client) -> None:
    """After every case above, the service is alive, creates tasks, and never said 500."""
    for case in CASES:
        await client.request(case.method, case.path, data=case.body, headers=case.headers)
    response = await client.post("/tasks", json={"title": "still works"}, headers=JSON)
    assert response.status == 201
    done = await wait_terminal(client, (await response.json())["id"])
    assert done["status"] == "completed"
    assert (await client.get("/health/live")).status == 200
    assert (await client.get("/health/ready")).status == 200
    scrape = await (await client.get("/metrics")).text()
    assert 'code="500"' not in scrape
