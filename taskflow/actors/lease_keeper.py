"""The lease keeper: renews, in one statement, the leases of every held attempt, and hands
back at shutdown the ones still held."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from taskflow.actors.attempts import Attempts
from taskflow.actors.ports import PipelineStore
from taskflow.errors import TaskflowError
from taskflow.lifecycle import Actor, Grace, LoopSpec
from taskflow.metrics import Metrics

log = structlog.get_logger(__name__)


class LeaseKeeper(Actor):
    """Every `lease_s / 3` seconds, extends the leases of the attempts `attempts` holds.

    Stopping: it renews until `finish()`, which ends the lease (`lease_expires_at = now()`)
    of every attempt still held — claims never started, attempts abandoned, outcomes not
    committed — so that any instance takes them over at once. `handed_back` counts them.
    """

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        attempts: Attempts,
        *,
        owner: str,
        lease_s: float,
    ) -> None:
        super().__init__()
        self._store = store
        self._metrics = metrics
        self._attempts = attempts
        self._owner = owner
        self._lease_s = lease_s
        self.handed_back = 0

    def loops(self) -> Iterable[LoopSpec]:
        """One loop, renewing until cancelled."""
        return [("lease-keeper", self.run())]

    async def run(self) -> None:
        """Renew until cancelled; a failed renewal is logged and tried again next round."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            await self.renew_once()

    async def renew_once(self) -> None:
        """Renew the current leases once."""
        ids = list(self._attempts.held())
        if not ids:
            return
        try:
            kept = await self._store.renew(ids, self._owner, self._lease_s)
        except TaskflowError as exc:
            log.warning("lease renewal failed", held=len(ids), error=str(exc))
            return
        still_held = self._attempts.held()
        lost = [i for i in ids if i not in kept and i in still_held]
        if lost:
            # Taken over by another attempt after our lease ran out (a stalled loop, a
            # PostgreSQL outage longer than the lease): the outcome write will be fenced.
            self._metrics.lost_leases.inc(len(lost))
            log.warning("leases lost to another attempt", count=len(lost))

    async def finish(self, grace: Grace) -> None:
        """Stop renewing and hand back every attempt still held."""
        await self.cancel_loops()
        ids = list(self._attempts.held())
        if not ids:
            return
        try:  # bounded by the store's own statement timeout
            released = await self._store.release(ids, self._owner)
        except TaskflowError as exc:
            log.warning("could not hand attempts back; their leases will run out", error=str(exc))
            return
        self.handed_back = len(released)
