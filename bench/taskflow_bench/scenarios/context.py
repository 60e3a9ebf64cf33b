"""What every scenario gets: the options, the chosen HTTP client, progress bars."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from taskflow_bench.database import BenchDatabase
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

    def service_config(self, database_url: str, **overrides: object) -> ServiceConfig:
        """The bench's service settings on `database_url` (processors, work 0 s, ...)."""
        config = ServiceConfig(
            database_url=database_url,
            amqp_url=self.options.amqp_url,
            amqp_queue=f"taskflow-bench-{uuid.uuid4().hex[:12]}",
            processors=self.options.processors,
            log_level=self.options.log_level,
        )
        return replace(config, **overrides)  # type: ignore[arg-type]

    @asynccontextmanager
    async def database(self) -> AsyncIterator[BenchDatabase]:
        """A fresh database with taskflow's schema, dropped afterwards."""
        async with BenchDatabase.create(self.options.database_admin_url) as db:
            yield db

    @asynccontextmanager
    async def service(self, config: ServiceConfig) -> AsyncIterator[Deployment]:
        """`--instances` taskflow processes with `config`, stopped afterwards."""
        async with running(config, self.options.instances) as deployment:
            yield deployment


def mib(kib: int) -> float:
    """KiB as MiB."""
    return kib / MIB
