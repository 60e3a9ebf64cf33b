"""The lease keeper against the in-memory store: renews what is held, notices what was
lost, and hands back at shutdown what is still held."""

from __future__ import annotations

import asyncio

from taskflow.actors.attempts import Attempts
from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.errors import StoreUnavailable
from taskflow.metrics import Metrics
from taskflow.models import Claim
from tests.unit.helpers import eventually, grace, new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


def holding(claims: list[Claim]) -> Attempts:
    """Attempts in which every claim of `claims` runs."""
    attempts = Attempts(len(claims))
    for claim in claims:
        attempts.claimed(claim)
    return attempts


async def test_renews_the_running_attempts_and_counts_the_lost_ones() -> None:
    store, metrics = MemoryStore(), Metrics()
    await store.insert_tasks([new_task(f"t{i}") for i in range(3)])
    claims = [c for c, _ in await store.claim(OWNER, 30, 3)]
    held = {c.task_id for c in claims}
    keeper = LeaseKeeper(store, metrics, holding(claims), owner=OWNER, lease_s=30)

    store.advance(20)
    await keeper.renew_once()
    assert {store.leases[i].expires_at for i in held} == {50.0}

    store.advance(31)  # a stall longer than the lease: another instance takes one over
    [(theirs, _)] = await store.claim("instance-b", 30, 1)
    await keeper.renew_once()
    assert sample(metrics, "taskflow_lost_leases_total") == 1
    assert store.leases[theirs.task_id].owner == "instance-b"
    assert {store.leases[i].expires_at for i in held - {theirs.task_id}} == {81.0}


async def test_a_failed_renewal_is_logged_and_tried_again() -> None:
    store, metrics = MemoryStore(), Metrics()
    await store.insert_tasks([new_task()])
    [(claim, _)] = await store.claim(OWNER, 30, 1)
    keeper = LeaseKeeper(store, metrics, holding([claim]), owner=OWNER, lease_s=30)
    store.advance(10)
    store.fail("renew", StoreUnavailable("down"))
    await keeper.renew_once()  # does not raise
    assert store.leases[claim.task_id].expires_at == 30.0
    await keeper.renew_once()
    assert store.leases[claim.task_id].expires_at == 40.0
    assert sample(metrics, "taskflow_lost_leases_total") == 0


async def test_nothing_held_means_no_call() -> None:
    store = MemoryStore()
    keeper = LeaseKeeper(store, Metrics(), Attempts(1), owner=OWNER, lease_s=30)
    await keeper.renew_once()
    await keeper.finish(grace(1))
    assert store.calls == []


async def test_finish_hands_back_what_is_still_held_and_stops_renewing() -> None:
    store = MemoryStore()
    await store.insert_tasks([new_task(f"t{i}") for i in range(3)])
    claims = [c for c, _ in await store.claim(OWNER, 30, 3)]
    attempts = holding(claims)
    attempts.ended(claims[0])  # its outcome was committed: not ours to hand back
    keeper = LeaseKeeper(store, Metrics(), attempts, owner=OWNER, lease_s=0.03)
    keeper.start()

    await keeper.finish(grace(1))

    assert all(task.done() for task in keeper.tasks)
    [(_, (released, owner))] = [c for c in store.calls if c[0] == "release"]
    assert sorted(released) == sorted(c.task_id for c in claims[1:])
    assert owner == OWNER
    assert keeper.handed_back == 2
    retaken = await store.claim("instance-b", 30, 10)  # at once, not when the lease runs out
    assert {c.task_id for c, _ in retaken} == {c.task_id for c in claims[1:]}


async def test_a_failed_hand_back_is_logged_and_left_to_the_leases() -> None:
    store = MemoryStore()
    await store.insert_tasks([new_task()])
    [(claim, _)] = await store.claim(OWNER, 30, 1)
    store.fail("release", StoreUnavailable("down"))
    keeper = LeaseKeeper(store, Metrics(), holding([claim]), owner=OWNER, lease_s=30)
    await keeper.finish(grace(1))  # does not raise
    assert keeper.handed_back == 0
    assert store.leases[claim.task_id].expires_at == 30.0


async def test_the_loop_renews_within_a_third_of_the_lease_and_at_once_when_asked() -> None:
    store, metrics = MemoryStore(), Metrics()
    await store.insert_tasks([new_task("t")])
    claims = [c for c, _ in await store.claim(OWNER, 30, 1)]

    # A lease of 3 s: the first renewal comes after about 1 s, well before the lease ends.
    keeper = LeaseKeeper(store, metrics, holding(claims), owner=OWNER, lease_s=3)
    runner = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: store.count("renew") > 0, timeout=2.5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    # A lease of an hour: nothing for 20 minutes, unless a lost notification asks for it.
    keeper = LeaseKeeper(store, metrics, holding(claims), owner=OWNER, lease_s=3600)
    runner = asyncio.create_task(keeper.run())
    try:
        before = store.count("renew")
        await asyncio.sleep(0.05)
        assert store.count("renew") == before
        keeper.renew_now()
        await eventually(lambda: store.count("renew") > before, timeout=5)
        asked = store.count("renew")
        await asyncio.sleep(0.1)
        assert store.count("renew") == asked  # once, then back to its 20-minute rhythm
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
