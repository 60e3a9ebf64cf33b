"""The global stream's cursor and the SSE parser of `taskflow watch`."""

from __future__ import annotations

import pytest

from taskflow.errors import BadRequest
from taskflow.events.messages import decode_cursor, encode_cursor
from taskflow.events.streams import parse_seq
from taskflow.watch import SseMessage, SseReader


@pytest.mark.parametrize("position", [(0, 0), (3, 1), (2**40 + 7, 12345), (2**63 - 1, 2**63 - 1)])
def test_a_cursor_names_its_position(position: tuple[int, int]) -> None:
    cursor = encode_cursor(position)
    assert len(cursor) == 22
    assert cursor.isascii()
    assert "\n" not in cursor
    assert decode_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor",
    ["", "x", "AAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAA", "!!!!!!!!!!!!!!!!!!!!!!",
     "_____________________w", "AAAAAAAAAAAAAAAAAAAAAB", "1", "-1", "é" * 22],
)  # fmt: skip
def test_anything_else_is_a_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor)
    assert "Last-Event-ID" in caught.value.details


@pytest.mark.parametrize(("raw", "seq"), [("0", 0), ("7", 7), ("2147483647", 2**31 - 1)])
def test_a_task_streams_last_event_id_is_a_seq(raw: str, seq: int) -> None:
    assert parse_seq(raw) == seq


@pytest.mark.parametrize("raw", ["-1", "+1", "1.0", "2147483648", "9" * 30, "٣", " 1", "0x1"])
def test_other_seqs_are_bad_requests(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_seq(raw)


def test_the_sse_reader_follows_the_event_stream_format() -> None:
    reader = SseReader()
    lines = [
        "retry: 1500", "", ": a comment", "id: 1", "event: status", 'data: {"a":', "data: 1}",
        "", "data:no space", "", "id: 2", "", "event: status", "data: x", "",
    ]  # fmt: skip
    messages = [m for m in map(reader.feed, lines) if m is not None]
    assert messages == [
        SseMessage('{"a":\n1}', "status", "1"),
        SseMessage("no space", "message", "1"),
        SseMessage("x", "status", "2"),  # an id without data still sets the last id
    ]
    assert reader.retry_ms == 1500
    assert reader.last_id == "2"
