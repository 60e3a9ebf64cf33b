"""The broker side of a run: the queues a taskflow service declared, deleted afterwards."""

from __future__ import annotations

import asyncio

import aio_pika


async def delete_queues(amqp_url: str, queues: list[str]) -> None:
    """Delete `queues` and their dead-letter queues, if RabbitMQ can be reached at all:
    a run without RabbitMQ leaves nothing there to delete."""
    if not queues:
        return
    try:
        async with asyncio.timeout(10):
            connection = await aio_pika.connect(amqp_url, timeout=5)
            async with connection, connection.channel() as channel:
                for name in queues:
                    await channel.queue_delete(name)
                    await channel.queue_delete(f"{name}.dead")
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
        pass
