"""The AMQP consumer's state, as `/health/ready` and the metrics report it, and its `AppKey`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiohttp import web


class ConsumerPhase(enum.StrEnum):
    """Where the consumer is."""

    DISABLED = "disabled"
    CONNECTING = "connecting"
    CONSUMING = "consuming"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


@dataclass(slots=True)
class ConsumerState:
    """Mutable state shared between the consumer and the health endpoint."""

    phase: ConsumerPhase = ConsumerPhase.DISABLED
    queue: str = "tasks"
    last_error: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The state as the readiness body shows it."""
        return {"state": self.phase.value, "queue": self.queue, "last_error": self.last_error}


# Absent while the consumer is not set up (`taskflow serve` sets it up; tests may not).
CONSUMER_STATE = web.AppKey("consumer_state", ConsumerState)
