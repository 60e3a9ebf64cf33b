"""`taskflow submit` over HTTP: one task, or many with --count and --file."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.support import run_taskflow

Client = TestClient[web.Request, web.Application]


async def taskflow(*args: str) -> tuple[int, str, str]:
    """Run `taskflow ARGS`; its exit code, stdout and stderr."""
    return await run_taskflow(*args)


async def test_submit_one_over_http_prints_the_task(client: Client) -> None:
    url = str(client.make_url("/")).rstrip("/")
    code, out, _ = await taskflow("submit", "resize", "--payload", '{"w": 100}', "--url", url)
    assert code == 0
    task = orjson.loads(out)
    assert (task["title"], task["payload"], task["source"]) == ("resize", {"w": 100}, "http")

    code, _, _ = await taskflow("submit", "bad", "--payload", "[1]", "--url", url)
    assert code == 1  # the service's 422 is printed, and the exit code says so


async def test_submit_many_over_http(client: Client, tmp_path: Path) -> None:
    url = str(client.make_url("/")).rstrip("/")
    code, out, _ = await taskflow("submit", "twice", "--url", url, "--count", "2", "--key", "k")
    assert code == 0
    assert orjson.loads(out) == {"via": "http", "url": f"{url}/tasks", "created": 2}

    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"title": "twice"}\n{"title": "bad", "colour": "red"}\n')
    code, out, err = await taskflow("submit", "--url", url, "--file", str(lines), "--key", "k")
    assert code == 1
    assert orjson.loads(out) == {"via": "http", "url": f"{url}/tasks", "existing": 1, "failed": 1}
    assert "HTTP 422" in err

    page = await (await client.get("/tasks")).json()
    assert [t["title"] for t in page["items"]] == ["twice", "twice"]
