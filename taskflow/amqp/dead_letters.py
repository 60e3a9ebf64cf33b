"""`taskflow dead-letters`: read the dead-letter queue, and replay messages from it.

Reading removes nothing: each message is fetched unacknowledged (`basic.get`) and given
back (`nack` with requeue) once every message present at the start has been seen.

A replay publishes a copy to the intake queue on a channel with publisher confirms and
acks the dead letter only after the broker confirmed the copy: a crash in between leaves
both (a duplicate, which the `message_id` idempotency key makes harmless), never
neither. The copy drops the `x-taskflow-error*` headers (the consumer writes them again
if it refuses the message again) and counts replays in `x-taskflow-replays`; a message
replayed `MAX_REPLAYS` times stays in the dead-letter queue and is reported (RabbitMQ
3.13+ no longer counts client republishes in `x-death`, so the count is ours).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError

from taskflow.amqp.messages import (
    DETAILS_HEADER,
    ERROR_HEADER,
    MESSAGE_HEADER,
    dead_letter_name,
    persistent_copy,
)

REPLAYS_HEADER = "x-taskflow-replays"
MAX_REPLAYS = 5
CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0
_ERROR_HEADERS = (ERROR_HEADER, MESSAGE_HEADER, DETAILS_HEADER)


class Action(enum.StrEnum):
    """What `replay` did with one dead letter."""

    REPLAYED = "replayed"  # published to the intake queue, confirmed, removed from `.dead`
    WOULD_REPLAY = "would_replay"  # --dry-run: left as it is
    CAPPED = "capped"  # replayed MAX_REPLAYS times already: stays dead
    FAILED = "failed"  # the broker did not confirm the copy: stays dead


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message of the dead-letter queue, as `list` shows it."""

    message_id: str | None
    reason: str | None
    error: str | None
    replays: int
    body: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON line `taskflow dead-letters list` prints."""
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "error": self.error,
            "replays": self.replays,
            "body": self.body.decode("utf-8", errors="replace"),
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _replays(headers: dict[str, Any]) -> int:
    try:
        return max(int(headers.get(REPLAYS_HEADER) or 0), 0)
    except (TypeError, ValueError):
        return 0


def dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    """What a fetched dead letter says about itself."""
    headers = dict(message.headers or {})
    return DeadLetter(
        message_id=message.message_id,
        reason=_text(headers.get(ERROR_HEADER)),
        error=_text(headers.get(MESSAGE_HEADER)),
        replays=_replays(headers),
        body=message.body,
    )


def replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The message to publish to the intake queue: the original, one replay more."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _ERROR_HEADERS}
    headers[REPLAYS_HEADER] = _replays(dict(message.headers or {})) + 1
    return persistent_copy(message, headers)


@asynccontextmanager
async def _fetching(
    channel: AbstractChannel, queue_name: str
) -> AsyncIterator[AsyncIterator[AbstractIncomingMessage]]:
    """The messages in `queue_name` now, fetched unacknowledged; those not settled by
    the caller are given back (requeued) on exit, whatever happened."""
    queue: AbstractQueue = await channel.declare_queue(
        queue_name, passive=True, timeout=CALL_TIMEOUT_S
    )
    present = queue.declaration_result.message_count or 0
    fetched: list[AbstractIncomingMessage] = []

    async def messages() -> AsyncIterator[AbstractIncomingMessage]:
        for _ in range(present):  # new arrivals wait for the next run
            message = await queue.get(no_ack=False, fail=False, timeout=CALL_TIMEOUT_S)
            if message is None:
                return
            fetched.append(message)
            yield message

    try:
        yield messages()
    finally:
        for message in fetched:
            if not message.processed:
                await message.nack(requeue=True)


async def list_dead_letters(url: str, queue: str, show: Callable[[DeadLetter], None]) -> int:
    """Call `show` for each message of `<queue>.dead`, in queue order; remove nothing.

    Returns how many there were.
    """
    connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
    count = 0
    async with connection:
        channel = await connection.channel()
        async with _fetching(channel, dead_letter_name(queue)) as messages:
            async for message in messages:
                show(dead_letter(message))
                count += 1
    return count


async def replay_dead_letters(
    url: str,
    queue: str,
    ids: Collection[str] | None,
    report: Callable[[DeadLetter, Action], None],
    *,
    dry_run: bool = False,
) -> None:
    """Replay the messages of `<queue>.dead` whose `message_id` is in `ids` (all when
    `ids` is None) to `queue`; `report` each one's `Action`. The others stay untouched."""
    connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
    async with connection:
        getter = await connection.channel()
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publisher.declare_queue(queue, passive=True, timeout=CALL_TIMEOUT_S)
        async with _fetching(getter, dead_letter_name(queue)) as messages:
            async for message in messages:
                if ids is not None and message.message_id not in ids:
                    continue
                letter = dead_letter(message)
                if letter.replays >= MAX_REPLAYS:
                    report(letter, Action.CAPPED)
                elif dry_run:
                    report(letter, Action.WOULD_REPLAY)
                else:
                    try:
                        await publisher.default_exchange.publish(
                            replay_copy(message),
                            routing_key=queue,
                            mandatory=True,
                            timeout=CALL_TIMEOUT_S,
                        )
                    except (AMQPError, *CONNECTION_EXCEPTIONS, TimeoutError):
                        # Not confirmed (returned, nacked, timed out): the dead letter stays.
                        report(letter, Action.FAILED)
                        continue
                    await message.ack()  # only after the confirm
                    report(letter, Action.REPLAYED)
