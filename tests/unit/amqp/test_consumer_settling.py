"""How the consumer settles deliveries on their channel: which acks and nacks it sends.

The broker is a stand-in channel that records each `basic.ack` and `basic.nack`, and the
pipeline one whose answers the test gives; what RabbitMQ then does with them is tested end
to end (tests/integration/amqp).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from taskflow.amqp import consumer as consumer_module
from taskflow.amqp.consumer import Consumer
from taskflow.amqp.state import ConsumerState
from taskflow.config import Settings
from taskflow.errors import Overloaded
from taskflow.lifecycle import Grace
from taskflow.metrics import Metrics
from tests.unit.helpers import eventually


class Channel:
    """Records what the consumer sends, in order."""

    is_closed = False

    def __init__(self, nack_s: float = 0.0) -> None:
        self.sent: list[tuple[str, int, bool]] = []
        self.nack_s = nack_s  # how long the broker takes to answer a nack

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        await asyncio.sleep(self.nack_s)
        self.sent.append(("nack", tag, requeue))


class Pipeline:
    """Refuses the messages whose tag is in `refuse` (the intake is full); the others wait
    for the test to answer them through `answers`."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.answers: list[asyncio.Future[Any]] = []

    def offer(self, new: Any) -> asyncio.Future[Any]:
        if len(self.answers) + 1 in self.refuse:
            self.answers.append(asyncio.get_running_loop().create_future())
            raise Overloaded("the intake queue is full", {})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.answers.append(future)
        return future


def delivery(channel: Channel, tag: int) -> DeliveredMessage:
    properties = spec.Basic.Properties(message_id=f"m-{tag}")
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(delivery_tag=tag, routing_key="tasks"),
        header=ContentHeader(properties=properties),
        body=b'{"title": "t"}',
        channel=channel,  # type: ignore[arg-type]
    )


def accepted() -> Any:
    """The intake's answer for a message whose task was created and committed."""
    return SimpleNamespace(created=True)


async def test_a_message_given_back_does_not_hold_back_the_acks_that_follow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "REQUEUE_DELAY_S", 0.2)
    channel, pipeline = Channel(), Pipeline(refuse={1})
    consumer = Consumer(Settings(), pipeline, Metrics(), ConsumerState())  # type: ignore[arg-type]

    for tag in (1, 2, 3):
        await consumer._on_delivery(delivery(channel, tag))
    for tag in (2, 3):
        pipeline.answers[tag - 1].set_result(accepted())
    # 1 is not settled yet: one multiple ack would cover it too, so 2 and 3 go one by one.
    await eventually(lambda: ("nack", 1, True) in channel.sent)
    assert sorted(channel.sent) == [("ack", 2, False), ("ack", 3, False), ("nack", 1, True)]

    channel.sent.clear()
    for tag in (4, 5, 6):
        await consumer._on_delivery(delivery(channel, tag))
        pipeline.answers[tag - 1].set_result(accepted())
    await eventually(lambda: bool(channel.sent) and channel.sent[-1][1] == 6)
    # Every tag up to 6 is now settled: one ack covers what follows the nacked message.
    assert channel.sent == [("ack", 6, True)]


async def test_nothing_is_acked_before_its_task_is_committed() -> None:
    channel, pipeline = Channel(), Pipeline(refuse=set())
    consumer = Consumer(Settings(), pipeline, Metrics(), ConsumerState())  # type: ignore[arg-type]

    for tag in (1, 2, 3):
        await consumer._on_delivery(delivery(channel, tag))
    pipeline.answers[1].set_result(accepted())  # 2 committed, 1 and 3 not yet
    await eventually(lambda: bool(channel.sent))
    assert channel.sent == [("ack", 2, False)]
    pipeline.answers[0].set_result(accepted())
    pipeline.answers[2].set_result(accepted())
    await eventually(lambda: len(channel.sent) == 2)
    assert channel.sent[1] == ("ack", 3, True)  # 1 and 3 at once: 2 was acked already


async def test_finish_acks_what_commits_within_the_flush_and_gives_back_the_refused() -> None:
    channel, pipeline = Channel(), Pipeline(refuse={3})
    consumer = Consumer(Settings(), pipeline, Metrics(), ConsumerState())  # type: ignore[arg-type]
    for tag in (1, 2, 3, 4):
        await consumer._on_delivery(delivery(channel, tag))

    async def commit_soon() -> None:
        await asyncio.sleep(0.1)  # while finish() waits: 1 and 2 commit, 4 never does
        pipeline.answers[0].set_result(accepted())
        pipeline.answers[1].set_result(accepted())

    committing = asyncio.create_task(commit_soon())
    started = asyncio.get_running_loop().time()
    # The refused message's pause (REQUEUE_DELAY_S, 1 s) ends as the shutdown begins.
    await consumer.finish(Grace(ends=started, flush_s=0.5))
    took = asyncio.get_running_loop().time() - started
    await committing

    assert sorted(channel.sent) == [("ack", 2, True), ("nack", 3, True)]
    # 4 is left unacked (the broker gives it back): finish waited for it until the flush
    # bound, and no longer.
    assert 0.5 <= took < 0.9


async def test_finish_waits_for_a_message_being_given_back() -> None:
    channel, pipeline = Channel(nack_s=0.2), Pipeline(refuse={1})
    consumer = Consumer(Settings(), pipeline, Metrics(), ConsumerState())  # type: ignore[arg-type]
    await consumer._on_delivery(delivery(channel, 1))

    await consumer.finish(Grace(ends=asyncio.get_running_loop().time(), flush_s=5))
    assert channel.sent == [("nack", 1, True)]
