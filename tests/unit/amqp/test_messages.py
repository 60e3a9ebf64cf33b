"""A message body becomes a task by the rules of POST /tasks, or a dead-letter reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from taskflow.amqp.consumer import prefetch_for
from taskflow.amqp.messages import (
    DETAILS_HEADER,
    ERROR_HEADER,
    MESSAGE_HEADER,
    BadMessage,
    dead_letter_copy,
    dead_letter_name,
    naming_encoding,
    task_from_message,
)
from taskflow.models import Source
from taskflow.validation import MAX_BODY_BYTES


def test_a_valid_body_is_an_amqp_task_keyed_by_message_id() -> None:
    new = task_from_message(b'{"title": "t", "payload": {"a": 1}}', "id-1")
    assert (new.title, new.description, new.payload) == ("t", None, {"a": 1})
    assert new.source is Source.AMQP
    assert new.idempotency_key == "id-1"
    assert task_from_message(b'{"title": "t"}', None).idempotency_key is None


@pytest.mark.parametrize(
    ("body", "message_id", "reason"),
    [
        (b"\xc3\x28", None, "invalid_json"),
        (b"{", None, "invalid_json"),
        (b"NaN", None, "invalid_json"),
        (b"42", None, "validation_failed"),
        (b'{"title": "t", "extra": true}', None, "validation_failed"),
        (b'{"payload": {}}', None, "validation_failed"),
        (b" " * (256 * 1024 + 1), None, "payload_too_large"),
        (b'{"title": "t"}', "", "invalid_message_id"),
        (b'{"title": "t"}', "x" * 201, "invalid_message_id"),
        (b'{"title": "t"}', "nul\x00", "invalid_message_id"),
    ],
)
def test_bad_messages_have_a_reason(body: bytes, message_id: str | None, reason: str) -> None:
    with pytest.raises(BadMessage) as raised:
        task_from_message(body, message_id)
    assert raised.value.code == reason
    assert raised.value.message


def test_validation_details_name_the_fields() -> None:
    with pytest.raises(BadMessage) as raised:
        task_from_message(b'{"title": "", "extra": 1}', None)
    assert set(raised.value.details) == {"title", "extra"}


def test_dead_letter_queue_name() -> None:
    assert dead_letter_name("tasks") == "tasks.dead"


@pytest.mark.parametrize(("queue_size", "prefetch"), [(1, 1), (10, 5), (10_000, 1000)])
def test_prefetch_leaves_half_the_intake_queue_to_http(queue_size: int, prefetch: int) -> None:
    assert prefetch_for(queue_size) == prefetch


def test_a_body_of_exactly_the_limit_is_read() -> None:
    body = b'{"title": "t"}'
    padded = body + b" " * (MAX_BODY_BYTES - len(body))  # JSON allows trailing spaces
    assert task_from_message(padded, None).title == "t"
    with pytest.raises(BadMessage) as raised:
        task_from_message(padded + b" ", None)
    assert raised.value.code == "payload_too_large"
    assert raised.value.details == {"max_bytes": MAX_BODY_BYTES, "bytes": MAX_BODY_BYTES + 1}


def test_a_body_that_is_not_json_names_the_encoding_taskflow_does_not_decode() -> None:
    with pytest.raises(BadMessage) as raised:
        task_from_message(b"\x1f\x8b\x08\x00", None)  # a gzip header
    named = naming_encoding(raised.value, "gzip")
    assert named.code == "invalid_json"
    assert named.message.startswith(raised.value.message)
    assert "content_encoding is 'gzip', which taskflow does not decode" in named.message
    assert named.details == {"content_encoding": "gzip"}
    # No encoding named, or a refusal that is not about decoding: the error as it was.
    assert naming_encoding(raised.value, None) is raised.value
    assert naming_encoding(raised.value, "") is raised.value
    invalid = BadMessage("validation_failed", "the task is not valid", {"title": ["x"]})
    assert naming_encoding(invalid, "gzip") is invalid


def incoming(**properties: Any) -> aio_pika.IncomingMessage:
    """A message as the consumer receives it, with `properties`."""
    delivered = DeliveredMessage(
        delivery=spec.Basic.Deliver(delivery_tag=1, routing_key="tasks"),
        header=ContentHeader(properties=spec.Basic.Properties(**properties)),
        body=b"{not json",
        channel=None,  # type: ignore[arg-type]
    )
    return aio_pika.IncomingMessage(delivered)


def test_a_dead_letter_copy_keeps_the_message_and_says_why() -> None:
    sent = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    message = incoming(
        headers={"tenant": "a"},
        content_type="application/json",
        content_encoding="identity",
        delivery_mode=1,
        priority=3,
        correlation_id="c-1",
        reply_to="replies",
        expiration="60000",
        message_id="m-1",
        timestamp=sent,
        message_type="create",
        user_id="guest",
        app_id="shop",
    )
    error = BadMessage("invalid_json", "body is not valid JSON", {"line": 1})
    copy = dead_letter_copy(message, error)
    assert copy.body == b"{not json"
    assert copy.headers == {
        "tenant": "a",
        ERROR_HEADER: "invalid_json",
        MESSAGE_HEADER: "body is not valid JSON",
        DETAILS_HEADER: '{"line":1}',
    }
    assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    kept = ("content_type", "content_encoding", "priority", "correlation_id", "reply_to")
    assert {name: getattr(copy, name) for name in kept} == {
        "content_type": "application/json",
        "content_encoding": "identity",
        "priority": 3,
        "correlation_id": "c-1",
        "reply_to": "replies",
    }
    assert (copy.message_id, copy.timestamp, copy.type, copy.app_id) == (
        "m-1",
        sent,
        "create",
        "shop",
    )
    # A copy must not expire in the dead-letter queue; RabbitMQ accepts only our user_id.
    assert (copy.expiration, copy.user_id) == (None, None)
    assert message.headers == {"tenant": "a"}  # the received message is left as it was


@pytest.mark.parametrize(
    ("length", "sent"),
    [(4096, "m" * 4096), (4097, "m" * 4095 + "…"), (10_000, "m" * 4095 + "…")],
)
def test_a_dead_letter_message_header_is_clipped_to_4096_characters(length: int, sent: str) -> None:
    copy = dead_letter_copy(incoming(), BadMessage("invalid_json", "m" * length, {}))
    assert copy.headers[MESSAGE_HEADER] == sent
    assert copy.headers[DETAILS_HEADER] == "{}"


def test_dead_letter_details_up_to_4096_characters_are_sent_whole() -> None:
    # '{"k":"' + value + '"}' is 8 characters around the value.
    whole = {"k": "v" * 4088}
    copy = dead_letter_copy(incoming(), BadMessage("validation_failed", "bad", whole))
    assert orjson.loads(str(copy.headers[DETAILS_HEADER])) == whole
    over = {"k": "v" * 4089}
    copy = dead_letter_copy(incoming(), BadMessage("validation_failed", "bad", over))
    assert orjson.loads(str(copy.headers[DETAILS_HEADER])) == {
        "_truncated": ["4097 characters; see the service log."]
    }
