"""aiormq's and aio-pika's per-attempt reconnect records are dropped; the rest are kept."""

from __future__ import annotations

import logging

import pytest

from taskflow.log import _ReconnectNoise


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    "record",
    [
        _record("aiormq.connection", "error when creating transport: %r", OSError(111)),
        _record("aiormq.connection", "Cancelling cause reader exited abnormally"),
        _record(
            "aio_pika.robust_connection",
            'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
            "amqp://…",
            "refused",
            2,
        ),
        _record(
            "aio_pika.tools",
            "Callback %r error: %s: %s",
            "<OneShotCallback: cb=<bound method RobustChannel._on_close of …>>",
            "RuntimeError",
            "closed",
        ),
    ],
)
def test_reconnect_noise_is_dropped(record: logging.LogRecord) -> None:
    assert not _ReconnectNoise().filter(record)


@pytest.mark.parametrize(
    "record",
    [
        _record("aiormq.connection", "Connection %r was blocked by: %r", "c", "low memory"),
        _record("aio_pika.tools", "Callback %r error: %s: %s", "<my_callback>", "KeyError", "x"),
    ],
)
def test_other_records_are_kept(record: logging.LogRecord) -> None:
    assert _ReconnectNoise().filter(record)
