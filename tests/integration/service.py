"""`taskflow serve` as a real subprocess, started and stopped the way an operator does it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]
import pytest
from aiohttp import ClientError, ClientSession

TASKFLOW = pathlib.Path(sys.executable).with_name("taskflow")  # the console script
READY_TIMEOUT_S = 90.0  # a first start runs initdb; the machine is shared and slow
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(data_dir: pathlib.Path, **overrides: str) -> dict[str, str]:
    """The environment for one instance: fast work, JSON logs, no DATABASE_URL, no broker.

    Nothing taskflow reads is inherited from the test's own environment. AMQP_URL points at a
    local port where nothing listens, so the instance serves HTTP alone.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TASKFLOW_") and name not in {"DATABASE_URL", "AMQP_URL", "PORT"}
    }
    env = {
        **inherited,
        "TASKFLOW_DATA_DIR": str(data_dir),
        "TASKFLOW_PORT": str(free_port()),
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "TASKFLOW_AMQP_QUEUE": f"tasks-test-{uuid.uuid4().hex[:12]}",
        "TASKFLOW_WORK_MIN_S": "0",
        "TASKFLOW_WORK_MAX_S": "0",
        "TASKFLOW_FAILURE_RATE": "0",
        "TASKFLOW_PROCESSORS": "10",
        "TASKFLOW_SHUTDOWN_GRACE_S": "5",
        "TASKFLOW_LOG_FORMAT": "json",
    }
    env.update(overrides)
    return env


def postgres_processes(data_dir: pathlib.Path) -> list[psutil.Process]:
    """The PostgreSQL server processes running on data_dir."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def stop_leftover_servers(data_dir: pathlib.Path) -> None:
    """Stop a server that a failed test left running on data_dir (SIGTERM: smart shutdown)."""
    leftovers = postgres_processes(data_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    psutil.wait_procs(leftovers, timeout=30)


@contextlib.contextmanager
def private_data_dir() -> Iterator[pathlib.Path]:
    """A path for a data directory (not created) in a folder of its own under the system temp.

    Not under pytest's tmp_path: run as root, the package makes the data directory's parents
    traversable for its server user, and every pytest session run as root resets
    /tmp/pytest-of-root to 0700, so a concurrent one cuts that user off in mid-start.
    Whatever server is left running on the directory is stopped, and the folder removed.
    """
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskflow-embedded-"))
    try:
        yield folder / "pg"
    finally:
        stop_leftover_servers(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)


class Service:
    """One `taskflow serve` process; its output (JSON log lines) is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{env['TASKFLOW_PORT']}"
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read(), name=f"service-{proc.pid}-output")

    @classmethod
    async def start(cls, env: dict[str, str], cwd: pathlib.Path) -> Service:
        """Run `taskflow serve` in cwd with exactly env."""
        proc = await asyncio.create_subprocess_exec(
            str(TASKFLOW), "serve", env=env, cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc, env)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything the process wrote so far."""
        return "\n".join(self.lines)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The log events written so far (only those called `name`, if given)."""
        events = []
        for line in self.lines:
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict) and name in (None, event.get("event")):
                    events.append(event)
        return events

    def event(self, name: str) -> dict[str, Any]:
        """The one log event called `name`."""
        found = self.events(name)
        assert len(found) == 1, f"{len(found)} {name!r} events in:\n{self.output}"
        return found[0]

    async def wait_ready(self, http: ClientSession) -> dict[str, Any]:
        """Poll /health/ready until it answers 200; return its body."""
        async with asyncio.timeout(READY_TIMEOUT_S):
            while self.proc.returncode is None:
                with contextlib.suppress(ClientError):
                    async with http.get(f"{self.url}/health/ready") as response:
                        if response.status == 200:
                            body: dict[str, Any] = await response.json()
                            return body
                await asyncio.sleep(0.2)
        pytest.fail(f"taskflow exited with {self.proc.returncode} before ready:\n{self.output}")

    async def wait_exit(self) -> int:
        """Wait for the process to end and its output to be read; return its exit code."""
        async with asyncio.timeout(STOP_TIMEOUT_S):
            code = await self.proc.wait()
            await self._reader
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send sig (SIGTERM: drain and exit) and return the exit code."""
        self.proc.send_signal(sig)
        return await self.wait_exit()

    async def close(self) -> None:
        """Make sure the process is gone (test teardown): SIGTERM, then SIGKILL."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await self.stop()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.wait_exit()
        self._reader.cancel()
