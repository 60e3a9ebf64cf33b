"""`TaskStore.cancel` / `retry` against PostgreSQL: one statement for many tasks, the
control notification, and the answer for a task another transaction changes meanwhile."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
import pytest

from taskflow.actors.cancels import CONTROL_CHANNEL, parse_control
from taskflow.db.store import CreateClaimed, TaskStore
from taskflow.models import ControlOutcome, Outcome, Status
from tests.unit.helpers import new_task

OWNER = "instance-a"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TaskStore]:
    async with TaskStore.connect(db_url) as opened:
        yield opened


async def test_cancel_of_each_status_in_one_call_and_its_notification(
    store: TaskStore, db_url: str
) -> None:
    tasks = [new_task(f"t{i}") for i in range(4)]
    await store.insert_tasks(tasks)
    waiting, running, done, cancelled = (t.id for t in tasks)
    # A claim returns its rows in no particular order.
    claims = {c.task_id: c for c in await store.claim_new([running, done], OWNER, 30)}
    run, fin = claims[running], claims[done]
    await store.finish([Outcome(fin, Status.COMPLETED, result={})], OWNER)
    await store.cancel([cancelled], None)

    listener = await asyncpg.connect(db_url, timeout=10)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CONTROL_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        unknown = uuid.uuid4()
        results = await store.cancel([waiting, running, done, cancelled, unknown], "why")
        payload = await asyncio.wait_for(heard.get(), 10)
    finally:
        await listener.close(timeout=10)

    assert {i: (r.outcome, r.task.status, r.changed) for i, r in results.items()} == {
        waiting: (ControlOutcome.CANCELLED, Status.CANCELLED, True),
        running: (ControlOutcome.CANCEL_REQUESTED, Status.IN_PROGRESS, True),
        done: (ControlOutcome.CONFLICT, Status.COMPLETED, False),
        cancelled: (ControlOutcome.CANCELLED, Status.CANCELLED, False),
    }
    requested_at = results[running].task.cancel_requested_at
    assert requested_at is not None
    assert parse_control(payload) == (running, run.attempt, requested_at.timestamp())
    assert heard.empty()  # one notification: only the running task needs one
    assert await store.renew([running], OWNER, 30) == {running: requested_at}


async def test_a_repeated_cancel_of_a_running_task_keeps_the_first_request_time(
    store: TaskStore,
) -> None:
    task = new_task("running")
    created = await store.insert_tasks([task], CreateClaimed(OWNER, 30, 1))
    assert created.claimed
    first = (await store.cancel([task.id], "first"))[task.id]
    await asyncio.sleep(0.01)
    again = (await store.cancel([task.id], "again"))[task.id]
    assert (first.outcome, again.outcome) == (ControlOutcome.CANCEL_REQUESTED,) * 2
    # The request time is when the cancel was first asked for: the cancel latency is
    # measured from it, and the attempt's stop is already on its way.
    assert first.task.cancel_requested_at is not None
    assert again.task.cancel_requested_at == first.task.cancel_requested_at


async def test_a_cancel_waiting_on_a_claim_reports_what_the_claim_made(
    store: TaskStore, db_url: str
) -> None:
    task = new_task()
    await store.insert_tasks([task])
    claimer = await asyncpg.connect(db_url, timeout=10)
    try:
        claiming = claimer.transaction()
        await claiming.start()
        await claimer.execute(  # a claim, not yet committed: the row is locked
            "UPDATE tasks SET status = 'in_progress', attempts = 1, lease_owner = $2, "
            "lease_expires_at = now() + interval '30 s', started_at = now() WHERE id = $1",
            task.id,
            OWNER,
        )
        cancel = asyncio.create_task(store.cancel([task.id], None))
        await asyncio.sleep(0.3)
        assert not cancel.done()  # waiting for the row
        await claiming.commit()
        results = await asyncio.wait_for(cancel, 10)
    finally:
        await claimer.close(timeout=10)
    # Its snapshot saw `new`; the UPDATE saw `in_progress`: asked again, it is a request.
    assert results[task.id].outcome is ControlOutcome.CANCEL_REQUESTED
    assert results[task.id].task.status is Status.IN_PROGRESS


async def test_a_cancel_never_waits_for_a_lock_while_holding_another(
    store: TaskStore, db_url: str
) -> None:
    # A finish or a lease renewal locks its rows in an order of its own (its plan's). Here
    # one holds Y, then goes on to X, while a cancel of X and Y runs: a cancel that locked X
    # and then waited for Y deadlocked with it, and PostgreSQL failed one of the two.
    x, y = new_task("x"), new_task("y")
    await store.insert_tasks([x, y], CreateClaimed(OWNER, 30, 2))
    async with _holding(db_url, y.id) as finisher:
        cancel = asyncio.create_task(store.cancel([x.id, y.id], "stop"))
        await asyncio.sleep(0.3)
        assert not cancel.done()  # X is requested; Y waits for the finisher, alone
        await asyncio.wait_for(_touch(finisher, x.id), 10)
    results = await asyncio.wait_for(cancel, 10)
    assert {i: (r.outcome, r.changed) for i, r in results.items()} == {
        x.id: (ControlOutcome.CANCEL_REQUESTED, True),
        y.id: (ControlOutcome.CANCEL_REQUESTED, True),
    }


async def test_a_lease_renewal_skips_a_row_another_transaction_holds(
    store: TaskStore, db: asyncpg.Connection, db_url: str
) -> None:
    # The lease keeper renews every held attempt in id order while the status writer
    # finishes some of them in its plan's order. Here the finish holds the later row and
    # then goes on to the earlier one: a renewal that waited for the later row while
    # holding the earlier one deadlocked with it.
    first, later = sorted([new_task("a"), new_task("b")], key=lambda t: t.id)
    await store.insert_tasks([first, later], CreateClaimed(OWNER, 30, 2))
    before = await _lease_ends(db, [first.id, later.id])
    async with _holding(db_url, later.id) as finisher:
        kept = await asyncio.wait_for(store.renew([first.id, later.id], OWNER, 600), 10)
        await asyncio.wait_for(_touch(finisher, first.id), 10)
    assert kept == {first.id: None, later.id: None}  # both still held
    after = await _lease_ends(db, [first.id, later.id])
    assert after[first.id] > before[first.id]  # renewed
    assert after[later.id] == before[later.id]  # skipped: renewed next time
    again = await store.renew([first.id, later.id], OWNER, 600)
    assert set(again) == {first.id, later.id}
    assert (await _lease_ends(db, [later.id]))[later.id] > before[later.id]


@asynccontextmanager
async def _holding(db_url: str, *task_ids: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that holds the rows of `task_ids`, as a finish or a cancel in flight
    does; committed when the block ends."""
    finisher = await asyncpg.connect(db_url, timeout=10)
    try:
        async with finisher.transaction():
            await finisher.execute(
                "SELECT 1 FROM tasks WHERE id = ANY($1) FOR UPDATE", list(task_ids)
            )
            yield finisher
    finally:
        await finisher.close(timeout=10)


async def _touch(conn: asyncpg.Connection, task_id: uuid.UUID) -> None:
    """Lock and change `task_id`'s row in `conn`'s transaction, as a finish going on does."""
    await conn.execute("UPDATE tasks SET updated_at = now() WHERE id = $1", task_id)


async def test_a_cancel_of_many_rows_one_finish_holds_waits_for_it_once(
    store: TaskStore, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every row is busy: the cancel waits for one of them alone, and once the finish has
    # committed, the rest go through together (not one waiting statement per row).
    inserted = await store.insert_tasks(
        [new_task(f"t{i}") for i in range(40)], CreateClaimed(OWNER, 30, 40)
    )
    ids = [c.task_id for c in inserted.claimed]
    statements: list[str] = []
    fetch = store._fetch

    async def counted(name: str, *args: object) -> list[asyncpg.Record]:
        statements.append(name)
        return await fetch(name, *args)

    monkeypatch.setattr(store, "_fetch", counted)
    async with _holding(db_url, *ids):
        cancel = asyncio.create_task(store.cancel(ids, "stop"))
        await asyncio.sleep(0.3)
        assert not cancel.done()  # waiting for the finish
    results = await asyncio.wait_for(cancel, 10)
    assert {r.outcome for r in results.values()} == {ControlOutcome.CANCEL_REQUESTED}
    assert set(results) == set(ids)
    # All busy; one waited for; the other 39 together.
    assert statements == ["cancel_tasks"] * 3


async def test_a_retry_locks_its_rows_in_id_order_whatever_its_plan(
    store: TaskStore, db_url: str
) -> None:
    # An UPDATE locks its rows in its plan's order: by id in an index scan, in the table's
    # order in a sequential scan. Here the table holds `high` before `low`; a cancel in
    # flight holds `high`; retry A (a sequential scan) and then retry B (an index scan)
    # of both start. Locking as it scanned, A waited for `high` and B took `low` and
    # waited for `high`; once the cancel committed, A got `high` and waited for `low`:
    # a deadlock, and PostgreSQL failed one of the two.
    low, high = sorted([new_task("a"), new_task("b")], key=lambda t: t.id)
    claimed = [*(await store.insert_tasks([high], CreateClaimed(OWNER, 30, 1))).claimed]
    claimed += (await store.insert_tasks([low], CreateClaimed(OWNER, 30, 1))).claimed
    for claim in claimed:  # one at a time: their new row versions stay in that order
        await store.finish([Outcome(claim, Status.FAILED, error="boom")], OWNER)
    retry = store.db.queries["retry_tasks"]
    both = [low.id, high.id]
    scanning, probing = [await asyncpg.connect(db_url, timeout=10) for _ in range(2)]
    try:
        await scanning.execute(
            "SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_tidscan = off"
        )
        await probing.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        for conn, scan in ((scanning, "Seq Scan on tasks"), (probing, "Index Scan")):
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {retry}", both, "?"))
            assert scan in plan
        async with _holding(db_url, high.id):
            a = asyncio.create_task(scanning.fetch(retry, both, "a"))
            await asyncio.sleep(0.3)
            b = asyncio.create_task(probing.fetch(retry, both, "b"))
            await asyncio.sleep(0.3)
            assert not a.done()  # waiting for `high` (and, fixed, holding `low`)
            assert not b.done()  # waiting for `high` (fixed: for `low`, holding nothing)
        rows_a, rows_b = await asyncio.wait_for(asyncio.gather(a, b), 10)
    finally:
        await scanning.close(timeout=10)
        await probing.close(timeout=10)
    assert sorted((r["id"], r["outcome"]) for r in rows_a) == [
        (low.id, "retried"),
        (high.id, "retried"),
    ]
    # B's snapshot saw both failed; A had retried them by the time B got their locks.
    assert sorted((r["id"], r["outcome"], r["status"]) for r in rows_b) == [
        (low.id, "unchanged", "failed"),
        (high.id, "unchanged", "failed"),
    ]


async def _lease_ends(db: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    rows = await db.fetch("SELECT id, lease_expires_at FROM tasks WHERE id = ANY($1)", ids)
    return {r["id"]: r["lease_expires_at"] for r in rows}


async def test_a_bulk_cancel_a_renewal_and_a_finish_of_the_same_running_tasks_all_succeed(
    store: TaskStore, db_url: str
) -> None:
    # The same races at scale, in random orders: every cancel gets an answer (requested, or
    # a conflict when the finish committed first), the renewal answers, and every outcome
    # is written.
    async with TaskStore.connect(db_url) as other:
        for _ in range(5):
            inserted = await store.insert_tasks(
                [new_task(f"t{i}") for i in range(200)], CreateClaimed(OWNER, 30, 200)
            )
            claims = list(inserted.claimed)
            random.shuffle(claims)
            ids = [c.task_id for c in claims]
            random.shuffle(ids)
            written, results, _ = await asyncio.gather(
                store.finish([Outcome(c, Status.COMPLETED, result={}) for c in claims], OWNER),
                other.cancel(ids, "stop"),
                store.renew(sorted(ids), OWNER, 30),
            )
            assert len(written) == 200
            assert {r.outcome for r in results.values()} <= {
                ControlOutcome.CANCEL_REQUESTED,
                ControlOutcome.CONFLICT,
            }
            assert len(results) == 200


async def test_retry_of_each_status_keeps_the_attempts(store: TaskStore) -> None:
    tasks = [new_task(f"t{i}") for i in range(3)]
    await store.insert_tasks(tasks)
    failed, waiting, running = (t.id for t in tasks)
    claim = {c.task_id: c for c in await store.claim_new([failed, running], OWNER, 30)}[failed]
    await store.finish([Outcome(claim, Status.FAILED, error="boom")], OWNER)

    results = await store.retry([failed, waiting, running], "again")
    assert {i: r.outcome for i, r in results.items()} == {
        failed: ControlOutcome.RETRIED,
        waiting: ControlOutcome.CONFLICT,
        running: ControlOutcome.CONFLICT,
    }
    retried = results[failed].task
    assert (retried.status, retried.attempts, retried.error, retried.finished_at) == (
        Status.NEW,
        1,
        None,
        None,
    )
    [(again, recovered)] = await store.claim(OWNER, 30, 1)  # the oldest new task
    assert (again.task_id, again.attempt, recovered) == (failed, 2, False)
    events = await store.task_events(failed)
    assert [(e.seq, e.status, e.attempt, e.reason) for e in events] == [
        (1, Status.NEW, 0, None),
        (2, Status.IN_PROGRESS, 1, None),
        (3, Status.FAILED, 1, None),
        (4, Status.NEW, 1, "again"),
        (5, Status.IN_PROGRESS, 2, None),
    ]
