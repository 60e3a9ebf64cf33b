"""GET /tasks?q=: an exact task id, or a case-insensitive title prefix, with filters and pages."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from taskflow.db.dashboard import dashboard_queries, title_range
from taskflow.db.store import FAR_FUTURE, MAX_UUID
from tests.integration.support import Client, create, settle


async def titles(client: Client, query: str) -> list[str]:
    response = await client.get(f"/tasks?{query}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return [t["title"] for t in body["items"]]


async def test_q_finds_title_prefixes_in_any_case(client: Client) -> None:
    for title in ("Resize photo", "resize THUMB", "rescale", "50% off", "50abc", "a_b", "axb"):
        await create(client, {"title": title})
    assert await titles(client, "q=RESIZE") == ["resize THUMB", "Resize photo"]
    assert await titles(client, "q=res") == ["rescale", "resize THUMB", "Resize photo"]
    assert await titles(client, "q=50%25") == ["50% off"]  # % is a character, not a wildcard
    assert await titles(client, "q=a_") == ["a_b"]
    assert await titles(client, "q=nothing") == []


async def test_q_finds_an_exact_id_and_respects_the_status_filter(client: Client) -> None:
    task = await create(client, {"title": "needle"})
    await create(client, {"title": "hay"})
    await settle(client)
    response = await client.get(f"/tasks?q={task['id']}")
    body = await response.json()
    assert [t["id"] for t in body["items"]] == [task["id"]]
    assert body["next_cursor"] is None
    assert await titles(client, f"q={task['id']}&status=new") == []
    assert await titles(client, "q=needle&status=completed") == ["needle"]
    assert await titles(client, "q=needle&status=failed") == []


async def test_q_pages_with_the_cursor(client: Client) -> None:
    await asyncio.gather(*(create(client, {"title": f"batch {i}"}) for i in range(12)))
    await create(client, {"title": "other"})
    seen: list[str] = []
    cursor = None
    async with asyncio.timeout(30):
        while True:
            suffix = f"&cursor={cursor}" if cursor else ""
            response = await client.get(f"/tasks?q=Batch&limit=5{suffix}")
            body = await response.json()
            seen += [t["title"] for t in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert sorted(seen) == sorted(f"batch {i}" for i in range(12))


async def test_title_prefix_search_uses_the_index(client: Client, db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO tasks (id, title, source) SELECT gen_random_uuid(), 'title ' || i, 'http' "
            "FROM generate_series(1, 20000) AS i"
        )
        await conn.execute("ANALYZE tasks")
        low, high = title_range("Title 1999")
        sql = dashboard_queries()["search_by_title"]
        plan = await conn.fetch(
            f"EXPLAIN {sql}", low, high, FAR_FUTURE, MAX_UUID, 51, [], timeout=10
        )
        assert "tasks_title_prefix_idx" in "\n".join(row[0] for row in plan)
    finally:
        await conn.close()


def test_title_range_bounds_exactly_the_prefix() -> None:
    assert title_range("AbC") == ("abc", "abd")
    assert title_range("z\U0010ffff") == ("z\U0010ffff", None)
    assert title_range("a\ud7ff") == ("a\ud7ff", "a\ue000")
