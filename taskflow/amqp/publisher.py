"""Publishing task messages as `taskflow submit --via amqp` does: persistent and confirmed.

Each message goes to the default exchange with the queue's name as routing key,
`delivery_mode=2`, `content_type=application/json` and a `message_id` (the idempotency
key), and counts as sent only once the broker confirms it (publisher confirms).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import aio_pika
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from taskflow.amqp.queues import declare_queue

WINDOW = 256
CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 30.0


def task_message(body: bytes, message_id: str) -> aio_pika.Message:
    """The message for one task body."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        app_id="taskflow-cli",
    )


async def publish_tasks(
    url: str,
    queue: str,
    messages: Iterable[tuple[bytes, str]],
    on_sent: Callable[[str | None], None],
    queue_type: str = "classic",
) -> None:
    """Publish `(body, message_id)` pairs to `queue`, up to `WINDOW` awaiting confirms.

    `on_sent(None)` follows each confirmed message, `on_sent(error)` each failed one.
    The durable queue is declared first, of `queue_type` as the consumer declares it, so
    messages sent before the service first ran wait in it. Connection errors and
    `QueueTypeConflict` propagate.
    """
    connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_queue(channel, queue, queue_type)
        exchange = channel.default_exchange
        pending = iter(messages)

        async def publish_some() -> None:
            for body, message_id in pending:  # shared: each worker takes the next one
                try:
                    await exchange.publish(
                        task_message(body, message_id),
                        routing_key=queue,
                        mandatory=True,
                        timeout=PUBLISH_TIMEOUT_S,
                    )
                except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                    on_sent(f"{type(exc).__name__}: {exc}")
                else:
                    on_sent(None)

        await asyncio.gather(*(publish_some() for _ in range(WINDOW)))
