"""Messages that can never become tasks go to `<queue>.dead`, with the reason, once."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
import pytest
from aio_pika import Message
from aio_pika.abc import AbstractIncomingMessage

from taskflow.actors.intake import Accepted
from taskflow.actors.pipeline import Pipeline
from taskflow.amqp.consumer import REQUEUE_DELAY_S
from taskflow.amqp.messages import BadMessage, dead_letter_copy, task_from_message
from taskflow.errors import Overloaded
from taskflow.models import NewTask
from taskflow_bench.harness.metrics import metric
from tests.integration.amqp.support import (
    Broker,
    Client,
    all_tasks,
    readiness,
    returned_at_stop,
    wait_for_tasks,
)

OVERSIZED = b'{"title": "big", "payload": {"blob": "' + b"a" * 300_000 + b'"}}'

BAD = [
    pytest.param(b"\xff\xfe{}", "invalid_json", True, id="not-utf8"),
    pytest.param(b'{"title": "cut', "invalid_json", True, id="not-json"),
    # POST /tasks says "Invalid input type." here (marshmallow's words, not load_new_task's).
    pytest.param(b'["a", "list"]', "validation_failed", False, id="not-an-object"),
    pytest.param(b'{"title": "", "colour": "red"}', "validation_failed", True, id="invalid"),
    pytest.param(b'{"title": "nul \\u0000"}', "validation_failed", True, id="unstorable"),
    pytest.param(OVERSIZED, "payload_too_large", False, id="oversized"),
]


async def _http_error(client: Client, body: bytes) -> dict[str, Any]:
    response = await client.post("/tasks", data=body, headers={"Content-Type": "application/json"})
    error: dict[str, Any] = (await response.json())["error"]
    return error


@pytest.mark.parametrize(("body", "reason", "same_as_http"), BAD)
async def test_bad_message_is_dead_lettered_and_the_next_one_consumed(
    amqp_client: Client, broker: Broker, body: bytes, reason: str, same_as_http: bool
) -> None:
    await broker.publish(
        body,
        message_id="bad-1",
        correlation_id="corr-9",
        content_type="application/json",
        app_id="billing",
        headers={"tenant": "acme"},
    )
    await broker.publish({"title": "after the bad one"})

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "after the bad one"

    [dead] = await broker.dead_letters(1)
    headers = dead.headers
    assert headers["x-taskflow-error"] == reason
    assert dead.body == body
    assert (dead.message_id, dead.correlation_id, dead.app_id) == ("bad-1", "corr-9", "billing")
    assert dead.content_type == "application/json"
    assert headers["tenant"] == "acme"
    assert dead.delivery_mode == 2
    message = headers["x-taskflow-error-message"]
    details = orjson.loads(str(headers["x-taskflow-error-details"]))
    if same_as_http:  # the same rules and the same words as POST /tasks
        error = await _http_error(amqp_client, body)
        assert (error["code"], error["message"], error["details"]) == (reason, message, details)
    elif reason == "payload_too_large":
        assert details == {"max_bytes": 256 * 1024, "bytes": len(body)}
    else:
        assert details == {"_schema": ["Expected a JSON object, got list."]}

    assert await metric(amqp_client, "taskflow_amqp_dead_lettered_total", reason=reason) == 1
    assert await broker.waiting() == 0
    assert await broker.waiting(broker.dead) == 0  # it was there once, not in a loop
    assert await returned_at_stop(amqp_client, broker) == 0  # the original was acked


async def test_a_compressed_body_is_dead_lettered_naming_its_encoding(
    amqp_client: Client, broker: Broker
) -> None:
    body = gzip.compress(orjson.dumps({"title": "zipped"}))
    await broker.publish(body, content_type="application/json", content_encoding="gzip")
    # A body marked gzip that is plain JSON is read as it is: the encoding is not looked at.
    await broker.publish({"title": "plain"}, content_encoding="gzip")

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "plain"
    [dead] = await broker.dead_letters(1)
    assert dead.body == body
    assert dead.content_encoding == "gzip"
    assert dead.headers["x-taskflow-error"] == "invalid_json"
    message = str(dead.headers["x-taskflow-error-message"])
    assert message.startswith("body is not valid UTF-8")
    assert "content_encoding is 'gzip', which taskflow does not decode" in message
    details = orjson.loads(str(dead.headers["x-taskflow-error-details"]))
    assert details == {"content_encoding": "gzip"}


async def test_a_dead_letter_with_huge_details_keeps_its_headers_small(
    amqp_client: Client, broker: Broker
) -> None:
    # Every unknown field is named in the details: 2,000 of them are far more than a
    # header should carry (headers travel in one frame), so the copy says where to look.
    body = orjson.dumps({"title": "many", **{f"field_{i}": 1 for i in range(2000)}})
    await broker.publish(body, message_id="wide-1")
    await broker.publish({"title": "after the wide one"})

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "after the wide one"
    [dead] = await broker.dead_letters(1)
    assert dead.body == body
    assert dead.headers["x-taskflow-error"] == "validation_failed"
    text = str(dead.headers["x-taskflow-error-details"])
    assert len(text) <= 4096
    details = orjson.loads(text)
    assert list(details) == ["_truncated"]
    assert "characters; see the service log." in details["_truncated"][0]


async def test_bad_message_id_is_dead_lettered(amqp_client: Client, broker: Broker) -> None:
    await broker.publish({"title": "fine body"}, message_id="k" * 201)
    await broker.publish({"title": "next"})

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "next"
    [dead] = await broker.dead_letters(1)
    assert dead.headers["x-taskflow-error"] == "invalid_message_id"
    assert orjson.loads(str(dead.headers["x-taskflow-error-details"])) == {
        "message_id": ["Must be 1 to 200 storable characters."]
    }


async def test_message_id_reused_with_another_body_is_dead_lettered(
    amqp_client: Client, broker: Broker
) -> None:
    await broker.publish({"title": "first"}, message_id="invoice-3")
    [first] = await wait_for_tasks(amqp_client, 1)
    await broker.publish({"title": "second"}, message_id="invoice-3")
    await broker.publish({"title": "third"})

    tasks = await wait_for_tasks(amqp_client, 2)
    assert sorted(t["title"] for t in tasks) == ["first", "third"]
    [dead] = await broker.dead_letters(1)
    assert dead.headers["x-taskflow-error"] == "idempotency_conflict"
    assert orjson.loads(dead.body) == {"title": "second"}
    details = orjson.loads(str(dead.headers["x-taskflow-error-details"]))
    assert details == {"idempotency_key": "invoice-3", "task_id": first["id"]}
    assert len(await all_tasks(amqp_client)) == 2


async def test_a_message_that_hits_a_bug_is_dead_lettered_and_consuming_goes_on(
    amqp_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the message's fault, but redelivering it would hit the bug again: it is parked."""

    def buggy(body: bytes, message_id: str | None) -> NewTask:
        if message_id == "unlucky":
            raise ZeroDivisionError("a bug in the intake")
        return task_from_message(body, message_id)

    monkeypatch.setattr("taskflow.amqp.consumer.task_from_message", buggy)
    await broker.publish({"title": "unlucky"}, message_id="unlucky")
    await broker.publish({"title": "next"})

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "next"
    [dead] = await broker.dead_letters(1)
    assert orjson.loads(dead.body) == {"title": "unlucky"}
    assert dead.headers["x-taskflow-error"] == "internal_error"
    assert dead.headers["x-taskflow-error-message"] == "ZeroDivisionError: a bug in the intake"
    assert (await readiness(amqp_client))["amqp"]["state"] == "consuming"
    assert await returned_at_stop(amqp_client, broker) == 0


async def test_a_message_refused_for_overload_comes_back_after_a_pause_and_becomes_a_task(
    amqp_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered: list[float] = []  # when the intake was offered the message, each time
    offer = Pipeline.offer

    def full_once(pipeline: Pipeline, new: NewTask) -> asyncio.Future[Accepted]:
        if new.title == "busy":
            offered.append(asyncio.get_running_loop().time())
            if len(offered) == 1:
                raise Overloaded("the intake queue is full", {})
        return offer(pipeline, new)

    monkeypatch.setattr(Pipeline, "offer", full_once)
    await broker.publish({"title": "busy"})

    [task] = await wait_for_tasks(amqp_client, 1)
    assert task["title"] == "busy"
    assert len(offered) == 2
    assert offered[1] - offered[0] >= REQUEUE_DELAY_S  # a full pipeline is not spun on
    assert await metric(amqp_client, "taskflow_amqp_messages_total", outcome="requeued") == 1
    assert await returned_at_stop(amqp_client, broker) == 0


async def test_a_dead_letter_that_cannot_be_published_keeps_the_original_until_it_can(
    amqp_client: Client, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = 0

    def fails_once(message: AbstractIncomingMessage, error: BadMessage) -> Message:
        nonlocal copies
        copies += 1
        if copies == 1:
            raise RuntimeError("the copy could not be made")
        return dead_letter_copy(message, error)

    monkeypatch.setattr("taskflow.amqp.consumer.dead_letter_copy", fails_once)
    await broker.publish(b"{not json", message_id="bad-twice")

    [dead] = await broker.dead_letters(1)
    assert dead.body == b"{not json"
    assert copies == 2  # given back, then dead-lettered on its redelivery
    assert await returned_at_stop(amqp_client, broker) == 0
    assert await broker.waiting(broker.dead) == 0  # once
