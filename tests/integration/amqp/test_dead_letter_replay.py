"""`taskflow dead-letters list|replay` against the real RabbitMQ and a consuming service:
listing removes nothing, a dry run changes nothing, a replay removes a dead letter only
once its copy is in the intake queue, and a message is replayed at most 5 times."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import orjson

from taskflow.amqp.dead_letters import MAX_REPLAYS, REPLAYS_HEADER
from taskflow.amqp.messages import ERROR_HEADER, MESSAGE_HEADER
from taskflow_bench.harness.environment import variable
from tests.conftest import AMQP_URL
from tests.integration.amqp.support import Broker, Client, wait_for_tasks
from tests.integration.support import run_taskflow


async def taskflow(queue: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run `taskflow dead-letters ARGS`; exit code, the JSON lines printed, stderr."""
    code, out, err = await run_taskflow(
        "dead-letters",
        *args,
        env={variable("amqp_url"): AMQP_URL, variable("amqp_queue"): queue},
    )
    return code, [orjson.loads(line) for line in out.splitlines() if line.strip()], err


async def dead(broker: Broker, body: bytes, message_id: str, replays: int | None = None) -> None:
    """Put a dead letter straight into `<queue>.dead`, as the consumer writes them."""
    headers: dict[str, Any] = {ERROR_HEADER: "validation_failed", MESSAGE_HEADER: "bad"}
    if replays is not None:
        headers[REPLAYS_HEADER] = replays
    await broker.channel.default_exchange.publish(
        aio_pika.Message(body, message_id=message_id, headers=headers),
        routing_key=broker.dead,
        timeout=30,
    )


async def wait_dead(broker: Broker, count: int) -> None:
    async with asyncio.timeout(30):
        while await broker.waiting(broker.dead) != count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)


async def test_list_and_dry_run_remove_nothing(broker: Broker) -> None:
    await dead(broker, b'{"title": "fixed"}', "m1")
    await dead(broker, b"\xff not json", "m2")
    await dead(broker, b'{"title": "tired"}', "m3", replays=MAX_REPLAYS)

    for _ in range(2):  # twice: the first listing gave every message back
        code, lines, err = await taskflow(broker.queue, "list")
        assert (code, err) == (0, "")
        assert [(m["message_id"], m["reason"], m["replays"]) for m in lines] == [
            ("m1", "validation_failed", 0),
            ("m2", "validation_failed", 0),
            ("m3", "validation_failed", MAX_REPLAYS),
        ]
        assert lines[0]["body"] == '{"title": "fixed"}'
        assert await broker.waiting(broker.dead) == 3

    code, lines, _ = await taskflow(broker.queue, "replay", "--all", "--dry-run")
    assert code == 1  # m3 cannot be replayed any more
    assert [(m["message_id"], m["action"]) for m in lines] == [
        ("m1", "would_replay"),
        ("m2", "would_replay"),
        ("m3", "capped"),
    ]
    assert await broker.waiting(broker.dead) == 3
    assert await broker.waiting() == 0


async def test_replay_publishes_back_and_caps_at_five(amqp_client: Client, broker: Broker) -> None:
    await dead(broker, b'{"title": "fixed"}', "good")
    await dead(broker, b'{"title": ""}', "hopeless")

    code, lines, _ = await taskflow(broker.queue, "replay", "--id", "good", "--id", "absent")
    assert code == 1  # "absent" is not there
    assert [(m["message_id"], m["action"]) for m in lines] == [
        ("good", "replayed"),
        ("absent", "not_found"),
    ]
    [task] = await wait_for_tasks(amqp_client, 1)
    assert (task["title"], task["source"]) == ("fixed", "amqp")
    await wait_dead(broker, 1)

    # The hopeless one is refused again each time, with one replay more, until the cap.
    for replays in range(MAX_REPLAYS):
        await wait_dead(broker, 1)
        code, lines, _ = await taskflow(broker.queue, "replay", "--all")
        assert (code, lines[0]["action"], lines[0]["replays"]) == (0, "replayed", replays)
        # Consumed and dead-lettered again (not lost on the way: 0 then 1).
        async with asyncio.timeout(30):
            while True:
                code, listed, _ = await taskflow(broker.queue, "list")
                if listed and listed[0]["replays"] == replays + 1:
                    break
                await asyncio.sleep(0.1)
    code, lines, _ = await taskflow(broker.queue, "replay", "--all")
    assert code == 1
    assert (lines[0]["message_id"], lines[0]["action"]) == ("hopeless", "capped")
    assert await broker.waiting(broker.dead) == 1
    # Replaying "good" again would be harmless: the message_id is the idempotency key.
    assert len(await wait_for_tasks(amqp_client, 1)) == 1


async def test_replay_needs_ids_or_all(broker: Broker) -> None:
    code, _, err = await taskflow(broker.queue, "replay")
    assert code == 2
    assert "--id" in err
