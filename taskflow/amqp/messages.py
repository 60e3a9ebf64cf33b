"""What a message on the tasks queue means: a `NewTask`, or why it is dead-lettered.

The rules are those of `POST /tasks` (`taskflow.validation`), so a message is refused
for the same reasons and with the same messages as an HTTP body. A refused message is
copied to `<queue>.dead` with its body and properties and three headers saying why.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from taskflow.errors import InvalidJson, TaskflowError, ValidationFailed
from taskflow.models import NewTask, Source
from taskflow.validation import (
    MAX_BODY_BYTES,
    check_idempotency_key,
    decode_json,
    load_new_task,
)

ERROR_HEADER = "x-taskflow-error"
MESSAGE_HEADER = "x-taskflow-error-message"
DETAILS_HEADER = "x-taskflow-error-details"
# Headers travel in one AMQP frame (128 KiB by default): keep ours small.
_HEADER_TEXT_MAX = 4096


class BadMessage(TaskflowError):
    """A message that can never become a task; `code` is the dead-letter reason."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.code = code

    @classmethod
    def from_error(cls, error: TaskflowError) -> BadMessage:
        """The dead-letter reason for a refusal from the shared rules (same code, message)."""
        return cls(error.code, error.message, error.details)


def dead_letter_name(queue: str) -> str:
    """The dead-letter queue of `queue`."""
    return f"{queue}.dead"


def task_from_message(body: bytes, message_id: str | None) -> NewTask:
    """The task a message asks for; raise `BadMessage` when it can never be one.

    Reasons: `payload_too_large`, `invalid_message_id`, `invalid_json` (not UTF-8 or
    not JSON) and `validation_failed` (not an object, or a field breaks a rule).
    """
    if len(body) > MAX_BODY_BYTES:
        raise BadMessage(
            "payload_too_large",
            f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}",
            {"max_bytes": MAX_BODY_BYTES, "bytes": len(body)},
        )
    try:
        key = check_idempotency_key(message_id)
    except ValidationFailed as exc:
        raise BadMessage(
            "invalid_message_id",
            "bad message_id (it is the idempotency key)",
            {"message_id": exc.details.get("idempotency_key", [])},
        ) from None
    try:
        return load_new_task(decode_json(body), Source.AMQP, key)
    except (InvalidJson, ValidationFailed) as exc:
        raise BadMessage.from_error(exc) from None


def naming_encoding(error: BadMessage, content_encoding: str | None) -> BadMessage:
    """`error`, and when the body was not UTF-8 JSON and the message names a
    `content_encoding` (gzip, say), a message that says taskflow does not decode it."""
    if error.code != "invalid_json" or not content_encoding:
        return error
    return BadMessage(
        error.code,
        f"{error.message}; the message's content_encoding is {content_encoding!r}, which"
        " taskflow does not decode: send the body as UTF-8 JSON",
        {**error.details, "content_encoding": content_encoding},
    )


def _clip(text: str) -> str:
    return text if len(text) <= _HEADER_TEXT_MAX else text[: _HEADER_TEXT_MAX - 1] + "…"


def _details_text(details: dict[str, Any]) -> str:
    text = orjson.dumps(details, default=str).decode()
    if len(text) <= _HEADER_TEXT_MAX:
        return text
    return orjson.dumps({"_truncated": [f"{len(text)} characters; see the service log."]}).decode()


def dead_letter_copy(message: AbstractIncomingMessage, error: BadMessage) -> aio_pika.Message:
    """A persistent copy of `message` with headers that say why it was refused.

    Body, headers and properties are kept, except `expiration` (the copy must not expire
    in the dead-letter queue) and `user_id` (RabbitMQ only accepts the publisher's own).
    """
    headers = dict(message.headers or {})
    headers[ERROR_HEADER] = error.code
    headers[MESSAGE_HEADER] = _clip(error.message)
    headers[DETAILS_HEADER] = _details_text(error.details)
    return persistent_copy(message, headers)


def persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """`message` to publish again, persistent, with `headers`: body and properties kept but
    `expiration` (a copy must not expire where it goes) and `user_id` (RabbitMQ accepts only
    the publisher's own)."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
