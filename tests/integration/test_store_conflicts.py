"""A statement PostgreSQL rolls back for a conflict with a concurrent transaction (SQLSTATE
class 40: a deadlock, a serialization failure) is a `503` to retry, never a `500`."""

from __future__ import annotations

import asyncpg

from tests.integration.support import Client, assert_error


async def test_a_create_rolled_back_by_a_deadlock_is_a_503_to_retry(
    client: Client, db: asyncpg.Connection
) -> None:
    # PostgreSQL itself raises the deadlock error, from a trigger, for the batch holding
    # this title: the same error a real deadlock gives the intake's INSERT.
    await db.execute(
        """
        CREATE FUNCTION deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'collides' THEN
                RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER deadlock_once BEFORE INSERT ON tasks
            FOR EACH ROW EXECUTE FUNCTION deadlock_once();
        """
    )
    refused = await client.post("/tasks", json={"title": "collides"})
    await assert_error(refused, 503, "overloaded")
    assert refused.headers["Retry-After"] == "1"
    assert "40P01" in (await refused.json())["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0  # nothing was written

    await db.execute("DROP TRIGGER deadlock_once ON tasks")
    retried = await client.post("/tasks", json={"title": "collides"})
    assert retried.status == 201
