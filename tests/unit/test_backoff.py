"""The one backoff helper: doubling delays up to a cap, reset after a success."""

from __future__ import annotations

import asyncio

import pytest

from taskflow.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.take() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.delay == 0.1
    assert backoff.take() == 0.1


def test_a_custom_factor() -> None:
    backoff = Backoff(1.0, 10.0, factor=3.0)
    assert [backoff.take() for _ in range(4)] == [1.0, 3.0, 9.0, 10.0]


async def test_sleep_waits_the_next_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("taskflow.backoff.asyncio.sleep", recording_sleep)
    backoff = Backoff(0.001, 0.002)
    assert await backoff.sleep() == 0.001
    assert await backoff.sleep() == 0.002
    assert slept == [0.001, 0.002]  # it waits what it says (a retry loop must not spin)
    assert backoff.delay == 0.002


def test_the_edges_are_allowed_a_constant_delay() -> None:
    backoff = Backoff(0.5, 0.5, factor=1.0)  # first == cap, factor 1: the same delay each time
    assert [backoff.take() for _ in range(3)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(("first", "cap", "factor"), [(0, 1, 2), (2, 1, 2), (0.1, 1, 0.5)])
def test_nonsense_is_refused(first: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first, cap, factor)
