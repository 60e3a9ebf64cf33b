"""Requests that aiohttp's HTTP parser refuses get the contract's JSON error shape.

They are sent over a raw socket (aiohttp's client would refuse to send them) to the
server as `taskflow serve` runs it (`TaskflowRunner`), and answered 400 or 431 with a
JSON body, not a plain-text page or a closed connection; the log has one info line
without the request's bytes, and no traceback.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from structlog.testing import capture_logs

from tests.integration.support import Client

SECRET = "parser-secret-token-0123456789"
HOST = b"Host: t\r\n"


async def exchange(client: Client, *parts: bytes, pause_s: float = 0.0) -> bytes:
    """Send `parts` (pausing between them) on a new connection; return all it answers."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause_s)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def parse(response: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers (lower-case names) and JSON body of one HTTP/1.1 response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, orjson.loads(body)


CASES = {
    "control byte in a header": (
        b"GET /tasks HTTP/1.1\r\n" + HOST + b"X-Note: a\x01b\r\n\r\n",
        400,
        "bad_request",
    ),
    "broken request line": (
        b"GET /tasks HTTP/1.1 trailing\r\n" + HOST + b"\r\n",
        400,
        "bad_request",
    ),
    "bad method token": (b"G(T /tasks HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request"),
    "bad chunked encoding": (
        b"POST /tasks HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "header over the limit": (
        b"GET /tasks HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "request_header_fields_too_large",
    ),
    "too many headers": (
        b"GET /tasks HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        431,
        "request_header_fields_too_large",
    ),
    "request line over the limit": (
        b"GET /tasks?q=" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        431,
        "request_header_fields_too_large",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_request_the_parser_refuses_gets_a_json_error(
    client: Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    request, status, code = CASES[name]
    request = request.replace(HOST, HOST + f"Authorization: Bearer {SECRET}\r\n".encode(), 1)
    with capture_logs() as events, caplog.at_level(logging.DEBUG):
        answer = await exchange(client, request)
    got, headers, body = parse(answer)
    assert got == status, answer
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["details"], dict)
    assert "Traceback" not in answer.decode("latin-1")
    assert SECRET.encode() not in answer

    refused = [e for e in events if e["event"] == "http request refused by the parser"]
    assert len(refused) == 1, events
    assert refused[0]["log_level"] == "info"
    assert refused[0]["status"] == status
    assert SECRET not in repr(events)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert SECRET not in caplog.text


async def test_a_broken_chunk_after_the_headers_is_a_json_400(client: Client) -> None:
    head = (
        b"POST /tasks HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = await exchange(client, head, b'5\r\n{"ti\r\nzz\r\n', pause_s=0.3)
    status, headers, body = parse(answer)
    assert status == 400, answer
    assert headers["content-type"].startswith("application/json")
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "bad_request"
    listed = await (await client.get("/tasks")).json()
    assert listed["items"] == []


async def test_the_connection_still_serves_good_requests_before_a_bad_one(client: Client) -> None:
    good = b"GET /health/live HTTP/1.1\r\n" + HOST + b"\r\n"
    bad = b"GET /tasks HTTP/1.1\r\n" + HOST + b"X-Note: \x7f\r\n\r\n"
    answer = await exchange(client, good, bad, pause_s=0.3)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    second = answer[answer.index(b"HTTP/1.", 1) :]
    status, _, body = parse(second)
    assert status == 400, answer
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "bad_request"
