"""The fast path of task validation accepts exactly what the schema accepts, and the same."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from aiohttp.test_utils import make_mocked_request

from taskflow.api.parser import TaskflowParser
from taskflow.api.schemas import IdempotencyHeaderSchema
from taskflow.validation import (
    DESCRIPTION_MAX,
    IDEMPOTENCY_KEY_MAX,
    PAYLOAD_MAX_BYTES,
    TITLE_MAX,
    TaskCreateSchema,
    quick_load,
)

BODIES: list[Any] = [
    {"title": "resize"},
    {"title": "resize", "payload": {"w": 100, "nested": [1, {"a": None}]}},
    {"title": "x" * TITLE_MAX, "description": "d" * DESCRIPTION_MAX, "payload": {}},
    {"title": "resize", "description": None},
    {"title": "ünïcödé ✓", "description": ""},
    {"title": "resize", "payload": {"blob": "x" * (PAYLOAD_MAX_BYTES - 20)}},
    # The limit exactly (≤ 64 KiB encoded): `{"blob":"…"}` is 11 bytes around the string.
    {"title": "edge", "payload": {"blob": "x" * (PAYLOAD_MAX_BYTES - 11)}},
    # Not valid: the fast path must decline, the schema then explains why.
    {},
    {"title": ""},
    {"title": "x" * (TITLE_MAX + 1)},
    {"title": None},
    {"title": 5},
    {"title": "a\x00b"},
    {"title": "a\ud800b"},
    {"title": "ok", "description": 5},
    {"title": "ok", "description": "d" * (DESCRIPTION_MAX + 1)},
    {"title": "ok", "description": "bad\x00"},
    {"title": "ok", "payload": None},
    {"title": "ok", "payload": []},
    {"title": "ok", "payload": "text"},
    {"title": "ok", "payload": {"k": "v\x00"}},
    {"title": "ok", "payload": {"k\x00": 1}},
    {"title": "ok", "payload": {"blob": "x" * (PAYLOAD_MAX_BYTES - 10)}},  # one byte over
    {"title": "ok", "payload": {"blob": "x" * PAYLOAD_MAX_BYTES}},
    {"title": "ok", "extra": 1},
    ["title"],
    "title",
    None,
]


def _schema_load(body: Any) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = TaskCreateSchema().load(body)
    except ma.ValidationError:
        return None
    return loaded


@pytest.mark.parametrize("body", BODIES)
def test_fast_path_agrees_with_the_schema(body: Any) -> None:
    expected = _schema_load(body)
    quick = quick_load(body)
    if expected is None:
        assert quick is None
    else:
        assert quick == expected


def test_fast_path_takes_every_valid_example() -> None:
    valid = [b for b in BODIES if _schema_load(b) is not None]
    assert len(valid) == 7
    assert all(quick_load(b) is not None for b in valid)


@pytest.mark.parametrize(
    "key",
    [
        None,
        "k",
        "k" * IDEMPOTENCY_KEY_MAX,
        "",
        "k" * (IDEMPOTENCY_KEY_MAX + 1),
        "a\x00b",
    ],
)
async def test_header_fast_path_agrees_with_the_schema(key: str | None) -> None:
    headers = {} if key is None else {"Idempotency-Key": key}
    try:
        expected: dict[str, Any] | None = IdempotencyHeaderSchema().load(headers)
    except ma.ValidationError:
        expected = None
    request = make_mocked_request("POST", "/tasks", headers=headers)
    quick = await TaskflowParser()._quick(IdempotencyHeaderSchema(), request, "headers")
    assert quick == expected
