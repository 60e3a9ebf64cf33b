"""The lease keeper against the in-memory store: renews what runs, notices what was lost."""

from __future__ import annotations

import uuid

from taskflow.actors.lease_keeper import LeaseKeeper
from taskflow.errors import StoreUnavailable
from taskflow.metrics import Metrics
from tests.unit.helpers import new_task, sample
from tests.unit.memory_store import MemoryStore

OWNER = "instance-a"


async def test_renews_the_running_attempts_and_counts_the_lost_ones() -> None:
    store, metrics = MemoryStore(), Metrics()
    await store.insert_tasks([new_task(f"t{i}") for i in range(3)])
    claims = [c for c, _ in await store.claim(OWNER, 30, 3)]
    held: set[uuid.UUID] = {c.task_id for c in claims}
    keeper = LeaseKeeper(store, metrics, owner=OWNER, lease_s=30, held=lambda: held)

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
    keeper = LeaseKeeper(store, metrics, owner=OWNER, lease_s=30, held=lambda: [claim.task_id])
    store.advance(10)
    store.fail("renew", StoreUnavailable("down"))
    await keeper.renew_once()  # does not raise
    assert store.leases[claim.task_id].expires_at == 30.0
    await keeper.renew_once()
    assert store.leases[claim.task_id].expires_at == 40.0
    assert sample(metrics, "taskflow_lost_leases_total") == 0


async def test_nothing_held_means_no_call() -> None:
    store = MemoryStore()
    keeper = LeaseKeeper(store, Metrics(), owner=OWNER, lease_s=30, held=list)
    await keeper.renew_once()
    assert store.calls == []
