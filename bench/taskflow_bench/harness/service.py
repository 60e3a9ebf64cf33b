"""A server as a real child process: `taskflow serve` (or the bench's baseline).

Start it, wait until it is ready, read its JSON log events (stderr) and what it printed
(stdout) as they come — so a full pipe never blocks it —, its memory from `/proc`, its
metrics, and stop it with a signal. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from signal import SIGCONT, SIGKILL, SIGTERM, Signals
from typing import Any

import aiohttp
import orjson

from taskflow_bench.harness import events, metrics
from taskflow_bench.harness.environment import port_of

SERVE = (sys.executable, "-m", "taskflow", "serve")
READY_TIMEOUT_S = 90.0  # a first embedded start runs initdb; the machine is shared and slow
STOP_TIMEOUT_S = 60.0
RAW = "<raw>"  # the `event` of an output line that is not a JSON object


def event_named(event: Mapping[str, Any], name: str) -> bool:
    """Whether a log event is the one called `name` (by its structlog `event` key).

    Tests name events only through this function and `Service.events`, so renaming an
    event is a change of one string where the test names it."""
    return event.get("event") == name


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of the CPU times in /proc/PID/stat


def proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state [0], ppid [1], utime
    [11], stime [12], and the children's cutime [13], cstime [14]. /proc is served from
    memory: reading it does not block the loop on disk."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


class ServiceExited(AssertionError):
    """The process ended while something was waiting for it to be ready or to log."""


class Service:
    """One child process: its log events, printed lines, port, memory and exit code."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, port: int) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.logs: list[dict[str, Any]] = []
        self.printed: list[str] = []
        self._readers = [
            asyncio.create_task(self._read_logs(), name=f"{name}-stderr"),
            asyncio.create_task(self._read_printed(), name=f"{name}-stdout"),
        ]

    @classmethod
    async def start(
        cls,
        name: str,
        env: Mapping[str, str],
        *,
        argv: Sequence[str] = SERVE,
        cwd: Path | None = None,
        port: int | None = None,
    ) -> Service:
        """Run `argv` (default `python -m taskflow serve`) with exactly `env`; don't wait.

        The port is `port`, or the one `env` gives the service."""
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(name, process, port_of(env) if port is None else port)

    async def _read_logs(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                event = {"event": RAW, "raw": line.decode(errors="replace").rstrip()}
            self.logs.append(event)

    async def _read_printed(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.printed.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        """The process id (the interpreter is started directly, no shell)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """True until the process has exited."""
        return self.process.returncode is None

    @property
    def owner(self) -> str:
        """The instance id this process writes as `lease_owner`."""
        return str(self.event(events.PIPELINE_STARTED)["owner"])

    def client(self, **options: Any) -> aiohttp.ClientSession:
        """A new HTTP session whose paths are relative to this service (`get("/tasks")`)."""
        options.setdefault("timeout", aiohttp.ClientTimeout(total=30))
        return aiohttp.ClientSession(base_url=self.url, **options)

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The log events so far (only those called `name`, if given) whose fields equal
        `match`."""
        return [
            e
            for e in self.logs
            if (name is None or event_named(e, name))
            and all(e.get(k) == v for k, v in match.items())
        ]

    def event(self, name: str, **match: Any) -> dict[str, Any]:
        """The one log event called `name` (with `match`); fails if there are 0 or several."""
        found = self.events(name, **match)
        assert len(found) == 1, f"{len(found)} {name!r} events in:\n{self.tail(len(self.logs))}"
        return found[0]

    async def wait_log(self, name: str, timeout: float, **match: Any) -> dict[str, Any]:
        """Wait (at most `timeout`) for a log event called `name`; return the first."""
        async with asyncio.timeout(timeout):
            while not (found := self.events(name, **match)):
                if not self.running:
                    raise ServiceExited(f"{self.name} exited before logging {name!r}")
                await asyncio.sleep(0.05)
        return found[0]

    async def wait_ready(
        self, path: str = "/health/ready", timeout: float = READY_TIMEOUT_S
    ) -> Any:
        """Poll `path` until it answers 200 and return its JSON body (None if not JSON);
        fail early if the process exits, with its last log lines."""
        async with self.client(timeout=aiohttp.ClientTimeout(total=5)) as http:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        if not self.running:
                            raise ServiceExited(
                                f"{self.name} exited at start-up ({self.process.returncode}):"
                                f"\n{self.tail()}"
                            )
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            async with http.get(path) as response:
                                if response.status == 200:
                                    return await response.json(content_type=None)
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise ServiceExited(
                    f"{self.name} was not ready in {timeout:g} s:\n{self.tail()}"
                ) from None

    def signal(self, signum: Signals) -> None:
        """Send `signum` to the process (if it still runs)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait (at most `timeout`) for the process to end and its output to be read;
        return its exit code."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self, signum: Signals = SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send `signum` (SIGTERM: drain and exit) and return the exit code; SIGKILL if the
        process is still there after `timeout`."""
        self.signal(signum)
        try:
            return await self.wait_exit(timeout)
        except TimeoutError:
            await self.kill()
            assert self.process.returncode is not None
            return self.process.returncode

    async def kill(self) -> None:
        """SIGKILL the process (resuming it first if it was stopped) and reap it."""
        self.signal(SIGCONT)
        self.signal(SIGKILL)
        with contextlib.suppress(TimeoutError):
            await self.wait_exit(15)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def metrics(self) -> metrics.Samples:
        """This instance's `/metrics`, by name and label set."""
        async with self.client() as http:
            return await metrics.scrape(http)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident) of the process, in KiB."""
        # /proc is served from memory: reading it does not block the loop on disk.
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
        return out

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system), in seconds."""
        fields = proc_stat(self.pid)
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def rss_bytes(self) -> int:
        """The process's resident set size now."""
        return self.memory_kib()["VmRSS"] * 1024

    @property
    def output(self) -> str:
        """Everything the process wrote so far: printed lines, then log lines."""
        return self.tail(len(self.logs) + len(self.printed))

    def tail(self, lines: int = 40) -> str:
        """The last log lines (and anything printed), for failure messages."""
        logs = [orjson.dumps(e).decode() for e in self.logs[-lines:]]
        return "\n".join(self.printed[-lines:] + logs)
