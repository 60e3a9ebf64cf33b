"""What the global stream sends: its opaque cursor, and the SSE message of an event."""

from __future__ import annotations

import base64
import binascii
import struct

import orjson

from taskflow.errors import BadRequest
from taskflow.models import StreamEvent

# A place in the global stream: (xid of the writing transaction, event id).
Position = tuple[int, int]

_CURSOR = struct.Struct(">QQ")
_MAX_POSITION = (1 << 63) - 1


def encode_cursor(position: Position) -> str:
    """The opaque SSE `id` of a position in the global stream."""
    return base64.urlsafe_b64encode(_CURSOR.pack(*position)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; `BadRequest` when it is not one of ours."""
    invalid = BadRequest(
        "Last-Event-ID is not a cursor of this stream",
        {"Last-Event-ID": ["Not a cursor of GET /events."]},
    )
    if len(cursor) != 22:
        raise invalid
    try:
        xid, event_id = _CURSOR.unpack(base64.urlsafe_b64decode(cursor + "=="))
    except (binascii.Error, ValueError, struct.error):
        raise invalid from None
    if xid > _MAX_POSITION or event_id > _MAX_POSITION or encode_cursor((xid, event_id)) != cursor:
        raise invalid
    return (xid, event_id)


def sse_message(event_id: str, event: StreamEvent) -> bytes:
    """One SSE message: `id`, `event: status`, and the event's JSON as `data`."""
    return b"id: %s\nevent: status\ndata: %s\n\n" % (
        event_id.encode(),
        orjson.dumps(event.to_json()),
    )
