"""The lease keeper: renews, in one statement, the leases of every held attempt, and hands
back at shutdown the ones still held. The renewal also reports the attempts with a cancel
requested: they are stopped here when their control notification was lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog

from taskflow.actors.attempts import Attempts
from taskflow.actors.cancels import stop_attempt
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
        self._renew_now = asyncio.Event()

    def loops(self) -> Iterable[LoopSpec]:
        """One loop, renewing until cancelled."""
        return [("lease-keeper", self.run())]

    async def run(self) -> None:
        """Renew until cancelled; a failed renewal is logged and tried again next round."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lease_s / 3):
                    await self._renew_now.wait()
            self._renew_now.clear()
            await self.renew_once()

    def renew_now(self) -> None:
        """Renew at once (a control notification may have been lost)."""
        self._renew_now.set()

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
        for task_id, cancel_requested_at in kept.items():
            attempt = self._attempts.attempt_of(task_id)
            if cancel_requested_at is not None and attempt is not None:
                stop_attempt(
                    self._attempts,
                    self._metrics,
                    task_id,
                    attempt,
                    cancel_requested_at.timestamp(),
                    via="lease_renewal",
                )
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
