"""Processes the bench starts: taskflow instances and the bare baseline server.

Each is a `taskflow_bench.harness` service on a free port, watched through its `/proc`
entry for memory and stopped with SIGTERM (then SIGKILL) when the bench is done with it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

import taskflow
import taskflow_bench
from taskflow.config import Settings
from taskflow.errors import TaskflowError
from taskflow_bench.harness.environment import free_port, service_environment
from taskflow_bench.harness.service import Service, ServiceExited

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def _source_path() -> str:
    """Where this bench imported `taskflow` and `taskflow_bench` from, as a PYTHONPATH.

    A child runs exactly that code: a bench started with `PYTHONPATH=<tree>:<tree>/bench`
    (to measure another checkout against this one) must measure <tree>'s service, not the
    taskflow installed in the virtualenv, which a clean environment alone would import.
    """
    packages = (taskflow, taskflow_bench)
    roots = (str(Path(package.__file__ or "").resolve().parent.parent) for package in packages)
    return os.pathsep.join(dict.fromkeys(roots))


# Nothing of the bench's own environment reaches a child, but the code it runs.
_CLEAN = {"PATH": os.defpath, "PYTHONPATH": _source_path()}


class BenchError(TaskflowError):
    """The bench could not set up or finish a scenario."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the bench runs a taskflow instance (environment of `python -m taskflow serve`)."""

    database_url: str
    amqp_url: str
    amqp_queue: str
    processors: int = Settings().processors  # the product's default, as the options'
    work_s: float = 0.0
    failure_rate: float = 0.0
    queue_size: int = 10_000
    log_level: str = "warning"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        """A clean environment for one instance on a free port (nothing inherited but PATH)."""
        env = service_environment(
            {
                "database_url": self.database_url,
                "amqp_url": self.amqp_url,
                "amqp_queue": self.amqp_queue,
                "host": "127.0.0.1",
                "processors": self.processors,
                "queue_size": self.queue_size,
                "work_min_s": self.work_s,
                "work_max_s": self.work_s,
                "failure_rate": self.failure_rate,
                "log_format": "json",
                "log_level": self.log_level,
                "shutdown_grace_s": 5,
            },
            inherit=_CLEAN,
        )
        return {**env, **self.extra_env}


async def _start(service: Service, ready_path: str) -> None:
    try:
        await service.wait_ready(ready_path, timeout=START_TIMEOUT_S)
    except ServiceExited as exc:
        raise BenchError(str(exc)) from None


async def _stop(service: Service) -> None:
    code = await service.stop(timeout=STOP_TIMEOUT_S)
    if code != 0:
        log.warning(
            "bench child exited with an error",
            child=service.name,
            exit_code=code,
            tail=service.tail(20),
        )


class Deployment:
    """`instances` taskflow processes sharing one database, each on its own port."""

    def __init__(self, config: ServiceConfig, instances: int = 1) -> None:
        self.config = config
        self._count = instances
        self.instances: list[Service] = []

    @property
    def urls(self) -> list[str]:
        """The base URL of each instance."""
        return [p.url for p in self.instances]

    def peak_rss_kib(self) -> int:
        """The largest peak resident memory of any instance, in KiB."""
        return max(p.memory_kib()["VmHWM"] for p in self.instances)

    def cpu_seconds(self) -> float:
        """CPU time used by all instances so far, in seconds."""
        return sum(p.cpu_seconds() for p in self.instances)

    def rss_kib(self) -> int:
        """The largest resident memory of any instance now, in KiB."""
        return max(p.memory_kib()["VmRSS"] for p in self.instances)

    async def start(self) -> None:
        """Start every instance and wait until all are ready."""
        self.instances = [
            await Service.start(f"taskflow-{i}", self.config.environment())
            for i in range(self._count)
        ]
        await asyncio.gather(*(_start(p, "/health/ready") for p in self.instances))

    async def stop(self) -> None:
        """Stop every instance."""
        await asyncio.gather(*(_stop(p) for p in self.instances))


@asynccontextmanager
async def running(config: ServiceConfig, instances: int = 1) -> AsyncIterator[Deployment]:
    """Start a deployment, yield it, stop it whatever happens."""
    deployment = Deployment(config, instances)
    try:
        await deployment.start()
        yield deployment
    finally:
        await deployment.stop()


@asynccontextmanager
async def baseline_server() -> AsyncIterator[Service]:
    """Run the bare aiohttp JSON handler (taskflow_bench.baseline) in a child process."""
    port = free_port()
    argv = (sys.executable, "-m", "taskflow_bench.baseline", "--port", str(port))
    child = await Service.start("baseline", _CLEAN, argv=argv, port=port)
    try:
        await _start(child, "/ping")
        yield child
    finally:
        await _stop(child)
