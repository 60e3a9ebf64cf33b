"""Integers in an AMQP task body: exact within 64 bits, dead-lettered beyond, never rounded."""

from __future__ import annotations

import json

import orjson

from tests.integration.amqp.support import Broker, Client, wait_for_tasks

EXACT = {"u64_max": 2**64 - 1, "i64_min": -(2**63), "list": [2**63, 2**53 + 1]}


async def test_a_message_with_64_bit_integers_keeps_them_exactly(
    amqp_client: Client, broker: Broker
) -> None:
    await broker.publish(json.dumps({"title": "big", "payload": EXACT}).encode(), message_id="b1")
    [task] = await wait_for_tasks(amqp_client, 1)
    response = await amqp_client.get(f"/tasks/{task['id']}")
    assert json.loads(await response.text())["payload"] == EXACT


async def test_a_message_with_an_integer_beyond_64_bits_is_dead_lettered(
    amqp_client: Client, broker: Broker
) -> None:
    body = b'{"title": "big", "payload": {"n": 18446744073709551616}}'
    await broker.publish(body, message_id="b2")
    [dead] = await broker.dead_letters(1)
    assert dead.body == body  # kept as sent
    headers = dead.headers or {}
    assert headers["x-taskflow-error"] == "validation_failed"
    details = orjson.loads(str(headers["x-taskflow-error-details"]))
    assert "integer beyond 64 bits (18446744073709551616)" in details["payload"][0]
    listed = await (await amqp_client.get("/tasks")).json()
    assert listed["items"] == []
