"""Fixtures for the RabbitMQ intake: the test's queues, and the service consuming them.

Each test has its own queue (`settings.amqp_queue`, `tasks-test-<hex>`) and dead-letter
queue on the shared broker; both are deleted after the test, once the service stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from taskflow.app import create_app
from taskflow.config import Settings
from tests.conftest import AiohttpClient
from tests.integration.amqp.support import Broker, Client, open_broker, wait_for_consumer

MakeClient = Callable[[Settings], Awaitable[Client]]


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    """A publisher's connection to the test queues, declared up front, deleted after."""
    async with open_broker(settings.amqp_queue, delete_after=True) as handle:
        yield handle


@pytest.fixture
def make_amqp_client(db_url: str, broker: Broker, aiohttp_client: AiohttpClient) -> MakeClient:
    """Start the whole service, consumer included, for some settings.

    It depends on `broker` before `aiohttp_client`, so the service stops before the
    queues are deleted (a running consumer would declare them again).
    """

    async def make(settings: Settings) -> Client:
        return await aiohttp_client(create_app(settings, amqp=True, poll_s=0.05))

    return make


@pytest.fixture
async def amqp_client(make_amqp_client: MakeClient, settings: Settings) -> Client:
    """The service with the test settings, once its consumer is consuming."""
    client = await make_amqp_client(settings)
    await wait_for_consumer(client, "consuming")
    return client
