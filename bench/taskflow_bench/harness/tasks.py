"""Waiting for tasks over HTTP, from an in-process test client or a real service."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp.client import _RequestContextManager

TERMINAL = ("completed", "failed", "cancelled")


class Http(Protocol):
    """What can GET a path of the service: aiohttp's `TestClient`, or a `ClientSession`
    made with `base_url` (see `Service.client`)."""

    def get(self, path: str, /) -> _RequestContextManager:
        """Start a GET of `path`."""


async def get_json(http: Http, path: str) -> Any:
    """GET `path` and decode its JSON body, whatever the status."""
    async with http.get(path) as response:
        return await response.json()


async def wait_terminal(
    http: Http, task_id: str, timeout: float = 30.0, poll_s: float = 0.02
) -> dict[str, Any]:
    """Poll `GET /tasks/{task_id}` (at most `timeout`) until it is completed or failed."""
    async with asyncio.timeout(timeout):
        while True:
            task: dict[str, Any] = await get_json(http, f"/tasks/{task_id}")
            if task["status"] in TERMINAL:
                return task
            await asyncio.sleep(poll_s)
