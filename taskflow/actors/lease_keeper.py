"""The lease keeper: renews, in one statement, the leases of every running attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection

import structlog

from taskflow.actors.ports import PipelineStore
from taskflow.errors import TaskflowError
from taskflow.metrics import Metrics

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """Every `lease_s / 3` seconds, extends the leases of the attempts `held()` names."""

    def __init__(
        self,
        store: PipelineStore,
        metrics: Metrics,
        *,
        owner: str,
        lease_s: float,
        held: Callable[[], Collection[uuid.UUID]],
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._owner = owner
        self._lease_s = lease_s
        self._held = held

    async def run(self) -> None:
        """Renew until cancelled; a failed renewal is logged and tried again next round."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            await self.renew_once()

    async def renew_once(self) -> None:
        """Renew the current leases once."""
        ids = list(self._held())
        if not ids:
            return
        try:
            kept = await self._store.renew(ids, self._owner, self._lease_s)
        except TaskflowError as exc:
            log.warning("lease renewal failed", held=len(ids), error=str(exc))
            return
        still_held = self._held()
        lost = [i for i in ids if i not in kept and i in still_held]
        if lost:
            # Taken over by another attempt after our lease ran out (a stalled loop, a
            # PostgreSQL outage longer than the lease): the outcome write will be fenced.
            self._metrics.lost_leases.inc(len(lost))
            log.warning("leases lost to another attempt", count=len(lost))
