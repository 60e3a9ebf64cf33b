"""Helpers for the integration tests: the client type, waits, and the error shape."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from taskflow.config import Settings

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Awaitable[Client]]


async def create(client: Client, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """POST a task that must be accepted (201 or 200); return it."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = await client.post("/tasks", json=body, headers=headers)
    assert response.status in (200, 201), await response.text()
    task: dict[str, Any] = await response.json()
    return task


async def settle(client: Client, timeout: float = 60.0) -> None:
    """Wait until no task is `new` or `in_progress`."""
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get("/tasks?status=new&status=in_progress&limit=1")
            assert response.status == 200
            if not (await response.json())["items"]:
                return
            await asyncio.sleep(0.05)


async def wait_until(check: Callable[[], Awaitable[object]], timeout: float = 30.0) -> None:
    """Poll `check` every 0.1 s until it returns something true (at most `timeout`)."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def assert_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Check an error response: its status, and the contract's JSON shape; return details."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    assert "Traceback" not in text
    body = await response.json()
    assert set(body) == {"error"}, text
    assert set(body["error"]) == {"code", "message", "details"}, text
    assert body["error"]["code"] == code, text
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    details: dict[str, Any] = body["error"]["details"]
    assert isinstance(details, dict), text
    return details


async def run_command(
    *argv: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> tuple[int, str, str]:
    """Run `argv` (this environment plus `env`) for at most `timeout`, killing it after;
    exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, **(env or {})}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run_taskflow(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m taskflow ARGS` (environment plus `env`); exit code, stdout, stderr."""
    return await run_command(sys.executable, "-m", "taskflow", *args, env=env)
