"""`taskflow submit` against a live service, run as a user would run it: one task, or many
with --count and --file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from taskflow_bench.harness.environment import variable
from taskflow_bench.harness.tasks import wait_terminal
from tests.integration.support import Client, run_taskflow


async def taskflow(client: Client, *args: str, **settings: str) -> tuple[int, str, str]:
    """Run `python -m taskflow ARGS` pointed at the test server by its host and port
    settings (then `settings`, by name)."""
    chosen = {"host": str(client.server.host), "port": str(client.server.port), **settings}
    return await run_taskflow(*args, env={variable(k): v for k, v in chosen.items()})


async def test_submit_creates_the_task(client: Client) -> None:
    code, out, err = await taskflow(client, "submit", "resize", "--payload", '{"w":100}')
    assert code == 0, err
    printed: dict[str, Any] = orjson.loads(out)
    assert printed["title"] == "resize"
    assert printed["payload"] == {"w": 100}
    assert printed["source"] == "http"

    stored = await (await client.get(f"/tasks/{printed['id']}")).json()
    assert stored["title"] == "resize"
    assert (await wait_terminal(client, printed["id"]))["status"] == "completed"


async def test_submit_with_a_key_twice_makes_one_task(client: Client) -> None:
    first = await taskflow(client, "submit", "once", "--key", "cli-1", "--description", "d")
    second = await taskflow(client, "submit", "once", "--key", "cli-1", "--description", "d")
    assert (first[0], second[0]) == (0, 0)
    assert orjson.loads(first[1])["id"] == orjson.loads(second[1])["id"]
    listing = await (await client.get("/tasks")).json()
    assert len(listing["items"]) == 1


async def test_submit_reports_what_the_service_refused(client: Client) -> None:
    code, out, _ = await taskflow(client, "submit", "resize", "--payload", "[1, 2]")
    assert code == 1
    assert orjson.loads(out)["error"]["code"] == "validation_failed"
    code, _, err = await taskflow(client, "submit", "resize", "--payload", "{not json")
    assert code == 2
    assert "--payload" in err
    assert (await (await client.get("/tasks")).json())["items"] == []


async def test_submit_with_the_url_option_and_an_unreachable_service(client: Client) -> None:
    url = str(client.make_url("/"))
    code, out, _ = await taskflow(
        client, "submit", "via url", "--payload", '{"w": 100}', "--url", url, port="1"
    )
    assert code == 0
    task = orjson.loads(out)
    assert (task["title"], task["payload"], task["source"]) == ("via url", {"w": 100}, "http")
    code, _, _ = await taskflow(client, "submit", "bad", "--payload", "[1]", "--url", url)
    assert code == 1  # the service's 422 is printed, and the exit code says so
    code, _, err = await taskflow(client, "submit", "nowhere", "--url", "http://127.0.0.1:1")
    assert code == 1
    assert "cannot reach" in err


async def test_a_bad_setting_stops_the_command_with_one_line(client: Client) -> None:
    code, out, err = await taskflow(client, "submit", "x", port="eighty")
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "TASKFLOW_PORT" in err


async def test_submit_many_over_http(client: Client, tmp_path: Path) -> None:
    url = str(client.make_url("/")).rstrip("/")
    code, out, _ = await taskflow(
        client, "submit", "twice", "--url", url, "--count", "2", "--key", "k"
    )
    assert code == 0
    assert orjson.loads(out) == {"via": "http", "url": f"{url}/tasks", "created": 2}

    lines = tmp_path / "tasks.jsonl"
    lines.write_text('{"title": "twice"}\n{"title": "bad", "colour": "red"}\n')
    code, out, err = await taskflow(
        client, "submit", "--url", url, "--file", str(lines), "--key", "k"
    )
    assert code == 1
    assert orjson.loads(out) == {"via": "http", "url": f"{url}/tasks", "existing": 1, "failed": 1}
    assert "HTTP 422" in err

    page = await (await client.get("/tasks")).json()
    assert [t["title"] for t in page["items"]] == ["twice", "twice"]
