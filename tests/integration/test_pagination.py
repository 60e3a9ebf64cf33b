"""GET /tasks: keyset pages over more than 100 tasks, newest first, with status filters."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

from taskflow.config import Settings
from tests.integration.support import Client, MakeClient, create, settle

COUNT = 130


async def create_many(client: Client, count: int, prefix: str = "task") -> list[str]:
    tasks = await asyncio.gather(
        *(create(client, {"title": f"{prefix} {i}"}) for i in range(count))
    )
    return [task["id"] for task in tasks]


async def page(client: Client, query: str) -> dict[str, Any]:
    response = await client.get(f"/tasks?{query}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) == {"items", "next_cursor"}
    return body


async def walk(client: Client, query: str, cursor: str | None = None) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following next_cursor from `cursor` to the end."""
    pages: list[list[dict[str, Any]]] = []
    async with asyncio.timeout(60):
        while True:
            suffix = f"&cursor={cursor}" if cursor else ""
            body = await page(client, query + suffix)
            pages.append(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return pages
            assert body["items"], "a page with a cursor must not be empty"


def flat(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [task for items in pages for task in items]


def assert_newest_first(tasks: list[dict[str, Any]]) -> None:
    keys = [(datetime.fromisoformat(t["created_at"]), uuid.UUID(t["id"])) for t in tasks]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)


async def test_every_task_appears_exactly_once_newest_first(client: Client) -> None:
    ids = await create_many(client, COUNT)
    pages = await walk(client, "limit=7")
    tasks = flat(pages)

    assert sorted(t["id"] for t in tasks) == sorted(ids)
    assert len(tasks) == COUNT
    assert [len(items) for items in pages] == [7] * (COUNT // 7) + [COUNT % 7]
    assert_newest_first(tasks)


async def test_an_exact_multiple_ends_without_an_empty_page(client: Client) -> None:
    await create_many(client, COUNT)
    pages = await walk(client, "limit=13")
    assert [len(items) for items in pages] == [13] * 10


async def test_default_and_largest_page_sizes(client: Client) -> None:
    ids = await create_many(client, COUNT)
    first = await page(client, "")
    assert len(first["items"]) == 50
    assert first["next_cursor"] is not None
    everything = await page(client, "limit=1000")
    assert len(everything["items"]) == COUNT
    assert everything["next_cursor"] is None
    assert sorted(t["id"] for t in everything["items"]) == sorted(ids)
    assert_newest_first(everything["items"])


async def test_the_newest_task_comes_first(client: Client) -> None:
    await create_many(client, 5)
    newest = await create(client, {"title": "newest"})
    assert (await page(client, "limit=1"))["items"][0]["id"] == newest["id"]


async def test_status_filters_page_through_their_tasks(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, failure_rate=0.5))
    ids = await create_many(client, COUNT)
    await settle(client)

    completed = flat(await walk(client, "status=completed&limit=10"))
    failed = flat(await walk(client, "status=failed&limit=10"))
    assert completed, "with 130 tasks at rate 0.5 both outcomes occur"
    assert failed
    assert {t["status"] for t in completed} == {"completed"}
    assert {t["status"] for t in failed} == {"failed"}
    assert_newest_first(completed)
    assert_newest_first(failed)
    assert sorted(t["id"] for t in completed + failed) == sorted(ids)

    both = flat(await walk(client, "status=completed&status=failed&limit=9"))
    assert_newest_first(both)
    assert sorted(t["id"] for t in both) == sorted(ids)
    repeated = flat(await walk(client, "status=failed&status=failed&limit=9"))
    assert [t["id"] for t in repeated] == [t["id"] for t in failed]

    assert (await page(client, "status=new"))["items"] == []
    assert (await page(client, "status=new&status=in_progress"))["items"] == []


async def test_a_cursor_is_stable_while_new_tasks_arrive(client: Client) -> None:
    ids = await create_many(client, COUNT, "old")
    first = await page(client, "limit=25")
    arrived = await create_many(client, 40, "new")

    rest = flat(await walk(client, "limit=25", first["next_cursor"]))
    seen = first["items"] + rest
    assert sorted(t["id"] for t in seen) == sorted(ids)
    assert not {t["id"] for t in rest} & set(arrived)
    assert_newest_first(seen)

    from_the_top = flat(await walk(client, "limit=50"))
    assert_newest_first(from_the_top)
    assert {t["id"] for t in from_the_top[:40]} == set(arrived)
    assert len(from_the_top) == COUNT + 40


async def test_a_cursor_keeps_its_filter_position_across_status_changes(client: Client) -> None:
    """Tasks change status while a filtered listing is paged: each is listed once."""
    ids = await create_many(client, COUNT)
    seen: list[str] = []
    cursor = None
    async with asyncio.timeout(60):
        while True:
            suffix = f"&cursor={cursor}" if cursor else ""
            body = await page(
                client, f"status=new&status=in_progress&status=completed&limit=10{suffix}"
            )
            seen += [t["id"] for t in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert sorted(seen) == sorted(ids)
