"""Cancels of running attempts reaching the instance that runs them.

Two ways in, one handling: a control notification (channel `taskflow_control`, sent by
the cancel statement on commit, payload `<task id>:<attempt>:<requested at, epoch s>`),
and the lease renewal, which returns the flag of every attempt it renews (so a lost
notification costs at most one renewal interval). Both call `stop_attempt`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog

from taskflow.actors.attempts import Attempts, CancelRequest
from taskflow.metrics import Metrics

log = structlog.get_logger(__name__)

CONTROL_CHANNEL = "taskflow_control"


def stop_attempt(
    attempts: Attempts,
    metrics: Metrics,
    task_id: uuid.UUID,
    attempt: int,
    requested_at: float,
    *,
    via: str,
) -> CancelRequest:
    """Stop attempt `attempt` of `task_id` if this instance runs it; log what happened."""
    result = attempts.request_cancel(task_id, attempt, requested_at)
    if result in (CancelRequest.STOPPING, CancelRequest.PENDING):
        log.info(
            "cancel requested: stopping the attempt",
            task_id=str(task_id),
            attempt=attempt,
            via=via,
            started=result is CancelRequest.STOPPING,
        )
    elif result is CancelRequest.TOO_LATE:
        metrics.cancels.labels("too_late").inc()
        log.warning(
            "cancel too late: the attempt had finished, its outcome stands",
            task_id=str(task_id),
            attempt=attempt,
            via=via,
        )
    return result


def parse_control(payload: str) -> tuple[uuid.UUID, int, float] | None:
    """The (task id, attempt, requested at) of a control notification, or None."""
    try:
        task_id, attempt, requested_at = payload.split(":")
        return uuid.UUID(task_id), int(attempt), float(requested_at)
    except ValueError:
        return None


def control_subscriber(
    attempts: Attempts, metrics: Metrics, on_reconnect: Callable[[], None]
) -> Callable[[str | None], None]:
    """The listener's subscriber of `CONTROL_CHANNEL`.

    After a (re)connection (payload None) notifications may have been lost:
    `on_reconnect` (a lease renewal now) finds the cancels they carried.
    """

    def on_control(payload: str | None) -> None:
        if payload is None:
            on_reconnect()
            return
        parsed = parse_control(payload)
        if parsed is None:
            log.warning("control notification not understood", payload=payload[:200])
            return
        task_id, attempt, requested_at = parsed
        stop_attempt(attempts, metrics, task_id, attempt, requested_at, via="notification")

    return on_control
