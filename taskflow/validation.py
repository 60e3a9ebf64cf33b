"""The rules of a task body, shared by `POST /tasks` and the RabbitMQ intake.

`decode_json` turns raw bytes into a JSON value (or `InvalidJson`); `TaskCreateSchema`
checks it (or `ValidationFailed` with per-field messages). What PostgreSQL or the JSON
encoder cannot store — NUL characters, lone surrogates, numbers that are not finite,
payloads nested more than 200 levels deep — is refused here, before the database.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import marshmallow as ma
import orjson

from taskflow.errors import InvalidJson, ValidationFailed
from taskflow.models import NewTask, Source

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
PAYLOAD_MAX_BYTES = 64 * 1024
# Well inside what the JSON encoder handles (255 levels), also inside the fingerprint's
# `{"payload": ...}` wrapper; deeper documents are refused instead of failing to store.
PAYLOAD_MAX_DEPTH = 200
IDEMPOTENCY_KEY_MAX = 200
# A body at the largest allowed sizes fits well within this; larger ones get 413 unread.
MAX_BODY_BYTES = 256 * 1024

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Integers are kept exactly from the request to PostgreSQL (jsonb) and back within the
# range of 64-bit integers, signed or not (what orjson reads and writes as integers).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
# orjson reads an integer literal beyond that range as a float, silently changing it. An
# integer of 18 digits or fewer is always in range, so only a body with a run of 19 or
# more digits is read again by the standard library, which keeps every integer exact.
_LONG_DIGITS = re.compile(rb"\d{19}")
_INT_DIGITS_MAX = 4000  # what the standard library converts (4300) with room to spare


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: stored, it would silently become null
        raise ValueError(f"the number {text[:50]} is out of range")
    return value


def _exact_int(text: str) -> int:
    if len(text) > _INT_DIGITS_MAX:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def decode_json(raw: bytes) -> Any:
    """Parse strict JSON (RFC 8259, UTF-8); raise `InvalidJson` with a reason.

    Integers are exact: one beyond 64 bits is returned as a Python int (that
    `unstorable` refuses), never as a float approximating it.
    """
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    # orjson refuses lone surrogate escapes; the standard library accepts them, so a body
    # that only has those is valid JSON and gets the precise 422 from the schema instead.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_exact_int,
        )
    except ValueError as exc:
        raise InvalidJson(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("body is not valid JSON: it is nested too deeply") from None


def unstorable(value: Any) -> str | None:
    """Describe the first thing in `value` PostgreSQL cannot store as JSON, or None.

    That is a NUL character or a lone surrogate in a string or key, a number that is
    not finite, an integer beyond 64 bits (`INT_MIN`..`INT_MAX`), or objects and arrays
    nested more than `PAYLOAD_MAX_DEPTH` levels deep.
    The walk is iterative: a deep document cannot exhaust the stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            match = _UNSTORABLE.search(item)
            if match is not None:
                return "NUL character" if match.group() == "\x00" else "lone UTF-16 surrogate"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "number that is not finite"
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                digits = str(item)
                shown = digits if len(digits) <= 30 else f"{digits[:30]}… ({len(digits)} digits)"
                return f"integer beyond 64 bits ({shown})"
        elif isinstance(item, dict | list):
            if depth > PAYLOAD_MAX_DEPTH:
                return f"value nested deeper than {PAYLOAD_MAX_DEPTH} levels"
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


def storable(value: Any) -> None:
    """marshmallow validator: refuse what `unstorable` finds."""
    problem = unstorable(value)
    if problem:
        article = "an" if problem[0] in "aeiou" else "a"
        raise ma.ValidationError(f"Contains {article} {problem}, which cannot be stored.")


def _payload_size(value: dict[str, Any]) -> None:
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        if unstorable(value) is None:  # else storable() reports it
            raise ma.ValidationError(f"Payload cannot be encoded as JSON: {exc}.") from None
        return
    if size > PAYLOAD_MAX_BYTES:
        raise ma.ValidationError(
            f"Encoded payload is {size} bytes; the limit is {PAYLOAD_MAX_BYTES}."
        )


class TaskCreateSchema(ma.Schema):
    """The body of `POST /tasks` and of a RabbitMQ task message."""

    class Meta:
        unknown = ma.RAISE

    title = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(min=1, max=TITLE_MAX), storable],
        metadata={"description": "What the task is, 1 to 200 characters.", "example": "resize"},
    )
    description = ma.fields.String(
        allow_none=True,
        load_default=None,
        validate=[ma.validate.Length(max=DESCRIPTION_MAX), storable],
        metadata={
            "description": "Free text, up to 10,000 characters.",
            "example": "Resize the uploaded image",
        },
    )
    payload = ma.fields.Dict(
        keys=ma.fields.String(),
        load_default=dict,
        validate=[storable, _payload_size],
        metadata={
            "description": "Any JSON object, at most 64 KiB encoded and 200 levels deep.",
            "example": {"w": 100, "h": 80},
        },
    )


_schema = TaskCreateSchema()
_FIELDS = frozenset(("title", "description", "payload"))


def quick_load(data: Any) -> dict[str, Any] | None:
    """`TaskCreateSchema().load(data)` for a body that is valid, else None.

    The schema stays the rule: this checks the same rules without marshmallow's
    machinery (a third of the CPU of `POST /tasks`), and answers None for anything it
    does not accept, so the schema then produces the result and its error messages.
    tests/unit/test_quick_load.py checks both agree.
    """
    if type(data) is not dict or not data.keys() <= _FIELDS:
        return None
    title = data.get("title")
    if type(title) is not str or not 1 <= len(title) <= TITLE_MAX or unstorable(title):
        return None
    description = data.get("description")
    if description is not None and (
        type(description) is not str
        or len(description) > DESCRIPTION_MAX
        or unstorable(description)
    ):
        return None
    payload = data.get("payload", _MISSING)
    if payload is _MISSING:
        payload = {}
    elif type(payload) is not dict or unstorable(payload):
        return None
    else:
        try:
            if len(orjson.dumps(payload)) > PAYLOAD_MAX_BYTES:
                return None
        except (TypeError, orjson.JSONEncodeError):
            return None
        payload = dict(payload)
    return {"title": title, "description": description, "payload": payload}


_MISSING: Any = object()


def load_task_fields(data: Any) -> dict[str, Any]:
    """Validate a decoded body with `TaskCreateSchema`; raise `ValidationFailed`."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            "the body must be a JSON object",
            {"_schema": [f"Expected a JSON object, got {type(data).__name__}."]},
        )
    fields = quick_load(data)
    if fields is not None:
        return fields
    try:
        loaded: dict[str, Any] = _schema.load(data)
    except ma.ValidationError as exc:
        raise ValidationFailed("the task is not valid", as_details(exc.messages)) from None
    return loaded


def load_new_task(data: Any, source: Source, idempotency_key: str | None = None) -> NewTask:
    """Validate a decoded body and build the `NewTask`; raise `ValidationFailed`."""
    return build_new_task(load_task_fields(data), source, idempotency_key)


def build_new_task(fields: dict[str, Any], source: Source, idempotency_key: str | None) -> NewTask:
    """The `NewTask` for fields already loaded by `TaskCreateSchema`."""
    return NewTask(
        title=fields["title"],
        description=fields["description"],
        payload=fields["payload"],
        source=source,
        idempotency_key=idempotency_key,
    )


def check_idempotency_key(key: str | None) -> str | None:
    """Return a usable key or None; raise `ValidationFailed` for a bad one."""
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or unstorable(key):
        raise ValidationFailed(
            "bad idempotency key",
            {"idempotency_key": [f"Must be 1 to {IDEMPOTENCY_KEY_MAX} storable characters."]},
        )
    return key


def as_details(messages: Any) -> dict[str, Any]:
    """marshmallow's messages as the `details` object of an error."""
    return messages if isinstance(messages, dict) else {"_schema": messages}
