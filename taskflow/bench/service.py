"""Processes the bench starts: taskflow instances and the bare baseline server.

Each is a child process on a free port, watched through its `/proc` entry for memory
and stopped with SIGTERM (then SIGKILL) when the bench is done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import ClientError, ClientSession, ClientTimeout

from taskflow.errors import TaskflowError

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class BenchError(TaskflowError):
    """The bench could not set up or finish a scenario."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB, from /proc."""
    # /proc is served from memory: reading it does not block the loop on disk.
    text = Path(f"/proc/{pid}/status").read_text()
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the bench runs a taskflow instance (environment of `python -m taskflow serve`)."""

    database_url: str
    amqp_url: str
    amqp_queue: str
    processors: int = 100
    work_s: float = 0.0
    queue_size: int = 10_000
    log_level: str = "warning"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def environment(self, port: int) -> dict[str, str]:
        """A clean environment for one instance on `port` (nothing inherited but PATH)."""
        return {
            "PATH": os.defpath,
            "DATABASE_URL": self.database_url,
            "AMQP_URL": self.amqp_url,
            "TASKFLOW_AMQP_QUEUE": self.amqp_queue,
            "TASKFLOW_HOST": "127.0.0.1",
            "TASKFLOW_PORT": str(port),
            "TASKFLOW_PROCESSORS": str(self.processors),
            "TASKFLOW_QUEUE_SIZE": str(self.queue_size),
            "TASKFLOW_WORK_MIN_S": str(self.work_s),
            "TASKFLOW_WORK_MAX_S": str(self.work_s),
            "TASKFLOW_FAILURE_RATE": "0",
            "TASKFLOW_LOG_FORMAT": "json",
            "TASKFLOW_LOG_LEVEL": self.log_level,
            "TASKFLOW_SHUTDOWN_GRACE_S": "5",
            **self.extra_env,
        }


class ChildProcess:
    """A server started by the bench: `argv` with `env`, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._argv = list(argv)
        self._env = dict(env)
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"taskflow-bench-{name}-", suffix=".log", delete=False
        )
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The process id (the bench starts the interpreter directly, no shell)."""
        if self._proc is None:
            raise BenchError(f"{self.name} is not running")
        return self._proc.pid

    def memory_kib(self) -> dict[str, int]:
        """Resident and peak resident memory of the process, in KiB."""
        return memory_kib(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote."""
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, ready_path: str, timeout: float = START_TIMEOUT_S) -> None:
        """Start the process and wait until `ready_path` answers 200."""
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                await self._wait_ready(ready_path)
        except TimeoutError:
            raise BenchError(
                f"{self.name} did not become ready in {timeout:g} s:\n{self.log_tail()}"
            ) from None

    async def _wait_ready(self, path: str) -> None:
        async with ClientSession(timeout=ClientTimeout(total=2)) as session:
            while True:
                if self._proc is not None and self._proc.returncode is not None:
                    raise BenchError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                try:
                    async with session.get(self.url + path) as response:
                        if response.status == 200:
                            return
                except (ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)

    async def get_json(self, path: str) -> Any:
        """GET `path` and decode the JSON body, whatever the status."""
        async with (
            ClientSession(timeout=ClientTimeout(total=5)) as session,
            session.get(self.url + path) as response,
        ):
            return orjson.loads(await response.read())

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        proc, self._proc = self._proc, None
        try:
            if proc is None or proc.returncode is not None:
                return None if proc is None else proc.returncode
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                return await proc.wait()
        finally:
            self._log.close()
            if proc is not None and proc.returncode == 0:
                await asyncio.to_thread(Path(self._log.name).unlink, missing_ok=True)
            elif proc is not None:
                log.warning(
                    "bench child exited with an error; its output is kept",
                    child=self.name,
                    exit_code=proc.returncode,
                    log=self._log.name,
                )


class Deployment:
    """`instances` taskflow processes sharing one database, each on its own port."""

    def __init__(self, config: ServiceConfig, instances: int = 1) -> None:
        self.config = config
        self.instances = [
            ChildProcess(
                f"taskflow-{i}",
                [sys.executable, "-m", "taskflow", "serve"],
                config.environment(port),
                port,
            )
            for i, port in enumerate(free_port() for _ in range(instances))
        ]

    @property
    def urls(self) -> list[str]:
        """The base URL of each instance."""
        return [p.url for p in self.instances]

    def peak_rss_kib(self) -> int:
        """The largest peak resident memory of any instance, in KiB."""
        return max(p.memory_kib()["VmHWM"] for p in self.instances)

    def rss_kib(self) -> int:
        """The largest resident memory of any instance now, in KiB."""
        return max(p.memory_kib()["VmRSS"] for p in self.instances)

    async def start(self) -> None:
        """Start every instance and wait until all are ready."""
        await asyncio.gather(*(p.start("/health/ready") for p in self.instances))

    async def stop(self) -> None:
        """Stop every instance."""
        await asyncio.gather(*(p.stop() for p in self.instances))


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
async def baseline_server() -> AsyncIterator[ChildProcess]:
    """Run the bare aiohttp JSON handler (taskflow.bench.baseline) in a child process."""
    port = free_port()
    child = ChildProcess(
        "baseline",
        [sys.executable, "-m", "taskflow.bench.baseline", "--port", str(port)],
        {"PATH": os.defpath},
        port,
    )
    try:
        await child.start("/ping")
        yield child
    finally:
        await child.stop()
