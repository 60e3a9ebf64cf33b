"""`taskflow serve` as a real subprocess: start, signal, read its JSON logs and metrics.

Every wait here is bounded. The process's output is read continuously (so a full pipe
never blocks it) and kept as parsed JSON log events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

# Variables of the test runner's environment that must not leak into a service under test.
_OWN_VARIABLES = ("DATABASE_URL", "AMQP_URL", "PORT")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment without taskflow settings, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKFLOW_") and key not in _OWN_VARIABLES
    }
    env.update(overrides)
    return env


@dataclass(eq=False)
class Service:
    """One `taskflow serve` process."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, name: str, env: Mapping[str, str]) -> Service:
        """Start `python -m taskflow serve` with `env` (which must set TASKFLOW_PORT)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskflow",
            "serve",
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        service = cls(name, int(env["TASKFLOW_PORT"]), process)
        service._reader = asyncio.create_task(service._read(), name=f"logs-{name}")
        return service

    async def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while line := await stream.readline():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = {"event": "<raw>", "raw": line.decode(errors="replace").rstrip()}
            if not isinstance(event, dict):
                event = {"event": "<raw>", "raw": repr(event)}
            self.logs.append(event)

    @property
    def url(self) -> str:
        """The service's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self.process.returncode is None

    @property
    def owner(self) -> str:
        """The instance id this process writes as `lease_owner`."""
        for event in self.logs:
            if event.get("event") == "pipeline started":
                return str(event["owner"])
        raise AssertionError(f"{self.name} has not logged 'pipeline started'")

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The log events named `event` whose fields equal `match`."""
        return [
            e
            for e in self.logs
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_log(self, event: str, timeout: float, **match: Any) -> dict[str, Any]:
        """Wait (at most `timeout`) for a log event and return it."""
        async with asyncio.timeout(timeout):
            while not (found := self.events(event, **match)):
                if not self.running:
                    raise AssertionError(f"{self.name} exited before logging {event!r}")
                await asyncio.sleep(0.05)
        return found[0]

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Wait until `/health/ready` answers 200; fail early if the process exits."""
        async with asyncio.timeout(timeout):
            while True:
                if not self.running:
                    raise AssertionError(f"{self.name} exited during start-up:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/health/ready", timeout=aiohttp.ClientTimeout(total=5)
                    ) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the process (if it still runs)."""
        if self.running:
            self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """Wait (at most `timeout`) for the process to exit; return its exit code."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
        return code

    async def kill(self) -> None:
        """SIGKILL the process (resuming it first if it was stopped) and reap it."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.kill()
        with contextlib.suppress(TimeoutError):
            await self.wait_exit(15)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """This instance's metrics, as `name{label="v",...}` → value."""
        async with session.get(
            f"{self.url}/metrics", timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            assert response.status == 200
            text = await response.text()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values

    def rss_bytes(self) -> int:
        """The process's resident set size."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def tail(self, lines: int = 40) -> str:
        """The last log lines, for failure messages."""
        return "\n".join(orjson.dumps(e).decode() for e in self.logs[-lines:])
