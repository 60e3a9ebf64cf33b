"""What every scenario gets: the options, the chosen HTTP client, progress bars."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from taskflow_bench.database import BenchDatabase
from taskflow_bench.harness.broker import delete_queues
from taskflow_bench.options import BenchOptions
from taskflow_bench.progress import Progress
from taskflow_bench.service import Deployment, ServiceConfig, running

MIB = 1024


@dataclass(frozen=True, slots=True)
class Context:
    """The run's options and helpers shared by the scenarios."""

    options: BenchOptions
    client: str
    progress: Progress
    # The intake queues named by service_config, deleted with the database they serve.
    _queues: list[str] = field(default_factory=list)

    def service_config(self, database_url: str, **overrides: object) -> ServiceConfig:
        """The bench's service settings on `database_url` (processors, work 0 s, ...)."""
        queue = f"taskflow-bench-{uuid.uuid4().hex[:12]}"
        self._queues.append(queue)
        config = ServiceConfig(
            database_url=database_url,
            amqp_url=self.options.amqp_url,
            amqp_queue=queue,
            processors=self.options.processors,
            log_level=self.options.log_level,
        )
        return replace(config, **overrides)  # type: ignore[arg-type]

    @asynccontextmanager
    async def database(self) -> AsyncIterator[BenchDatabase]:
        """A fresh database with taskflow's schema, dropped afterwards, with the RabbitMQ
        queues of the services configured for it (each service declares its own)."""
        first = len(self._queues)
        try:
            async with BenchDatabase.create(self.options.database_admin_url) as db:
                yield db
        finally:
            names = self._queues[first:]
            del self._queues[first:]
            await delete_queues(self.options.amqp_url, names)

    @asynccontextmanager
    async def service(self, config: ServiceConfig) -> AsyncIterator[Deployment]:
        """`--instances` taskflow processes with `config`, stopped afterwards."""
        async with running(config, self.options.instances) as deployment:
            yield deployment


def mib(kib: int) -> float:
    """KiB as MiB."""
    return kib / MIB
