"""A message body becomes a task by the rules of POST /tasks, or a dead-letter reason."""

from __future__ import annotations

import pytest

from taskflow.amqp.consumer import prefetch_for
from taskflow.amqp.messages import BadMessage, dead_letter_name, task_from_message
from taskflow.models import Source


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
