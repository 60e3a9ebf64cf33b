"""Declaring taskflow's queues with their type (`TASKFLOW_AMQP_QUEUE_TYPE`).

`classic` declares them as every earlier version did (no `x-queue-type` argument, so a
queue created before the setting existed stays equivalent); `quorum` adds
`x-queue-type: quorum`, the replicated type of a RabbitMQ cluster. A queue that already
exists with the other type makes RabbitMQ refuse the declaration (PRECONDITION_FAILED);
that becomes `QueueTypeConflict`, whose message names both types and the way out.
"""

from __future__ import annotations

import re

from aio_pika.abc import AbstractChannel, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable

from taskflow.config import AMQP_QUEUE_TYPES
from taskflow.errors import TaskflowError

DECLARE_TIMEOUT_S = 10.0

# RabbitMQ: "inequivalent arg 'x-queue-type' for queue 'tasks' in vhost '/': received
# 'classic' but current is 'quorum'", "... received none but current is the value 'quorum'
# of type 'longstr'", or "... but current is none" (a classic queue declared without it).
_CURRENT_TYPE = re.compile(r"x-queue-type.*current is (?:the value )?'?(?P<type>[\w-]+)'?")


class QueueTypeConflict(TaskflowError):
    """A queue exists with another type than `TASKFLOW_AMQP_QUEUE_TYPE` asks for."""

    code = "queue_type_conflict"

    def __init__(self, queue: str, wanted: str, existing: str) -> None:
        super().__init__(
            f"RabbitMQ queue {queue!r} exists as a {existing} queue but "
            f"TASKFLOW_AMQP_QUEUE_TYPE={wanted}: set TASKFLOW_AMQP_QUEUE_TYPE={existing}, "
            f"or drain and delete the queue so that it is declared again as {wanted}",
            {"queue": queue, "wanted": wanted, "existing": existing},
        )
        self.queue = queue
        self.wanted = wanted
        self.existing = existing


def queue_arguments(queue_type: str) -> FieldTable | None:
    """The declaration arguments of a queue of `queue_type` (None for classic)."""
    if queue_type not in AMQP_QUEUE_TYPES:
        raise ValueError(f"unknown queue type {queue_type!r}")
    return {"x-queue-type": queue_type} if queue_type == "quorum" else None


async def declare_queue(channel: AbstractChannel, name: str, queue_type: str) -> AbstractQueue:
    """Declare the durable queue `name` of `queue_type` on `channel`.

    Raises `QueueTypeConflict` when it exists with another type (the channel is then
    closed by the broker, as after any refused declaration).
    """
    try:
        return await channel.declare_queue(
            name, durable=True, arguments=queue_arguments(queue_type), timeout=DECLARE_TIMEOUT_S
        )
    except ChannelPreconditionFailed as exc:
        text = str(exc)
        if "x-queue-type" not in text:
            raise
        match = _CURRENT_TYPE.search(text)
        existing = match["type"] if match else _other(queue_type)
        if existing == "none":
            existing = "classic"
        raise QueueTypeConflict(name, queue_type, existing) from exc


def _other(queue_type: str) -> str:
    return "classic" if queue_type == "quorum" else "quorum"
