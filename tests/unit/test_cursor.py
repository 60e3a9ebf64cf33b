"""The opaque keyset cursor of `GET /tasks`."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from taskflow.api.tasks import decode_cursor, encode_cursor
from taskflow.errors import BadRequest
from taskflow.models import Source, Status, Task


def task_at(created_at: datetime, task_id: uuid.UUID | None = None) -> Task:
    return Task(
        id=task_id or uuid.uuid4(),
        title="t",
        description=None,
        payload={},
        status=Status.NEW,
        source=Source.HTTP,
        attempts=0,
        result=None,
        error=None,
        created_at=created_at,
        updated_at=created_at,
        started_at=None,
        finished_at=None,
    )


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC),  # no microseconds
        datetime(2026, 3, 1, 12, 30, 15, 1, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_a_cursor_decodes_to_the_position_it_was_made_from(created_at: datetime) -> None:
    task = task_at(created_at)
    cursor = encode_cursor(task)
    assert decode_cursor(cursor) == (created_at, task.id)


def test_a_cursor_is_url_safe_and_short() -> None:
    cursor = encode_cursor(task_at(datetime.now(UTC), uuid.UUID(int=(1 << 128) - 1)))
    assert cursor.isascii()
    assert not set(cursor) & set("+/=&?# ")
    assert len(cursor) <= 200  # the query schema's limit


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "!!!!",
        "a",
        cursor_of("just a string"),
        cursor_of([]),
        cursor_of(["2026-03-01T12:00:00+00:00"]),
        cursor_of(["2026-03-01T12:00:00+00:00", "not-a-uuid"]),
        cursor_of(["yesterday", str(uuid.UUID(int=7))]),
        cursor_of(["2026-03-01T12:00:00", str(uuid.UUID(int=7))]),  # no offset
        cursor_of([1, 2]),
        cursor_of(["2026-03-01T12:00:00+00:00", str(uuid.UUID(int=7)), "extra"]),
        cursor_of({"created_at": "2026-03-01T12:00:00+00:00"}),
        # Valid in Python, but outside what a timestamp can be once moved to UTC.
        cursor_of(["0001-01-01T00:00:00+14:00", str(uuid.UUID(int=7))]),
        cursor_of(["9999-12-31T23:59:59-14:00", str(uuid.UUID(int=7))]),
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    ],
)
def test_a_cursor_that_is_not_ours_is_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor)
    assert caught.value.details == {"cursor": ["Not a valid cursor."]}
