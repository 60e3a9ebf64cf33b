"""Small helpers for the actors' unit tests."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

from taskflow.lifecycle import Grace
from taskflow.metrics import Metrics
from taskflow.models import NewTask, Source


def new_task(title: str = "t", key: str | None = None, **payload: Any) -> NewTask:
    """A validated create request, as intake receives it."""
    return NewTask(
        title=title, description=None, payload=payload, source=Source.HTTP, idempotency_key=key
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of one metric sample (0 when it has not been written)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def grace(seconds: float) -> Grace:
    """A shutdown grace of `seconds` from now (at least a second to flush)."""
    return Grace.starting_now(seconds)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait, yielding to the loop, until `condition()` holds (bounded by `timeout`)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state that has no event
            await asyncio.sleep(0.001)


def finished_futures() -> int:
    """How many finished futures something still refers to (after a full collection)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Future) and o.done())
