"""Live events: latency across instances, and many open streams during a drain.

stream-latency: two instances; a client follows `GET /events` on the first while tasks
are created on the second at `--stream-rate` status changes per second (a third of that
in tasks: each makes three changes). The latency of a change is the time from its `at`
(PostgreSQL's clock, taken just before its commit) to its arrival at the client, so it
slightly overstates commit-to-client.

stream-fanout: one instance drains `--stream-tasks` tasks inserted while it runs, first
with no stream open, then with `--stream-clients` clients on `GET /events`; the drain
rates are compared, and every stream must receive every event (a stream the server drops
as lagging resumes with `Last-Event-ID`, as a browser would, and counts as reconnected).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime

import aiohttp
import orjson

from taskflow.watch import SseReader
from taskflow_bench.database import BenchDatabase
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.drain import timeout_for
from taskflow_bench.service import BenchError, ServiceConfig, running
from taskflow_bench.stats import histogram, percentile, rate, ratio

LATENCY_METRICS = (
    MetricSpec("p50_ms", "commit to client, median", "ms", 1),
    MetricSpec("p99_ms", "commit to client, p99", "ms", 1),
    MetricSpec("max_ms", "commit to client, max", "ms", 1),
    MetricSpec("changes_per_s", "changes made per second", "1/s"),
    MetricSpec("missing", "changes not received", ""),
)
LATENCY_TARGETS = (Target("p99_ms", "<=", 50), Target("missing", "<=", 0))
FANOUT_METRICS = (
    MetricSpec("alone_tasks_per_s", "drain rate, no stream", "1/s"),
    MetricSpec("streams_tasks_per_s", "drain rate, streams open", "1/s"),
    MetricSpec("drain_ratio", "with streams / without", "", 2),
    MetricSpec("short_streams", "streams missing events", ""),
    MetricSpec("reconnects", "streams resumed after a drop", ""),
)
FANOUT_TARGETS = (Target("drain_ratio", ">=", 0.9), Target("short_streams", "<=", 0))
STREAM = {"Accept": "text/event-stream"}


async def run_latency(ctx: Context) -> ScenarioResult:
    """Run stream-latency `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "stream-latency",
        {"changes_per_s": o.stream_rate, "seconds": o.stream_seconds, "instances": 2},
        LATENCY_METRICS,
        LATENCY_TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        async with ctx.database() as db:
            config = ctx.service_config(db.url, processors=o.processors)
            async with running(config, 2) as deployment:
                reader_url, writer_url = deployment.urls
                label = f"stream-latency {rep}/{o.repetitions}"
                async with ctx.progress.timed(label, o.stream_seconds):
                    result.runs.append(
                        await _latency(reader_url, writer_url, o.stream_rate, o.stream_seconds)
                    )
    return result


async def _latency(
    reader_url: str, writer_url: str, changes_per_s: float, seconds: float
) -> dict[str, float]:
    tasks_per_s = changes_per_s / 3
    count = max(1, int(tasks_per_s * seconds))
    latencies: list[float] = []
    created: set[str] = set()
    received: set[tuple[str, int]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        response = await session.get(f"{reader_url}/events", headers=STREAM)
        if response.status != 200:
            raise BenchError(f"GET /events answered {response.status}")
        await response.content.readline()  # `retry:`: the stream has begun

        async def follow() -> None:
            async for message in SseReader().messages(response):
                item = orjson.loads(message.data)
                latencies.append(time.time() - datetime.fromisoformat(item["at"]).timestamp())
                received.add((item["task_id"], item["seq"]))
                if len(received) >= 3 * count:
                    return

        async def create() -> None:
            async with session.post(f"{writer_url}/tasks", json={"title": "latency"}) as answer:
                if answer.status != 201:
                    raise BenchError(f"POST /tasks answered {answer.status}")
                created.add((await answer.json())["id"])

        follower = asyncio.create_task(follow(), name="stream-follower")
        start = time.monotonic()
        posts = []
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / tasks_per_s - time.monotonic()))
            posts.append(asyncio.create_task(create(), name=f"create-{n}"))
        await asyncio.gather(*posts)
        made = time.monotonic() - start
        try:
            async with asyncio.timeout(30):
                await follower
        except TimeoutError:
            follower.cancel()
        response.close()
    ours = {(task, seq) for task in created for seq in (1, 2, 3)}
    hist = histogram(latencies)
    return {
        "p50_ms": percentile(hist, 50) / 1000,  # the histogram is in microseconds
        "p99_ms": percentile(hist, 99) / 1000,
        "max_ms": max(hist, default=math.nan) / 1000,
        "changes_per_s": rate(3 * count, made),
        "missing": float(len(ours - received)),
    }


async def run_fanout(ctx: Context) -> ScenarioResult:
    """Run stream-fanout `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "stream-fanout",
        {"tasks": o.stream_tasks, "streams": o.stream_clients, "processors": o.drain_processors},
        FANOUT_METRICS,
        FANOUT_TARGETS,
    )
    for rep in range(1, o.repetitions + 1):
        label = f"stream-fanout {rep}/{o.repetitions}"
        alone, _, _ = await _drain(ctx, 0, f"{label} alone")
        with_streams, short, reconnects = await _drain(ctx, o.stream_clients, f"{label} streams")
        result.runs.append(
            {
                "alone_tasks_per_s": alone,
                "streams_tasks_per_s": with_streams,
                "drain_ratio": ratio(with_streams, alone),
                "short_streams": float(short),
                "reconnects": float(reconnects),
            }
        )
    return result


_MARK = b"\nevent: status\n"
_OVERLAP = len(_MARK) - 1


class _Counter:
    """Counts the `status` messages of a stream at C speed (no copy of what it reads),
    remembering the last `id` seen whole."""

    def __init__(self) -> None:
        self.count = 0
        self.last_id: str | None = None
        self.reconnects = 0
        self._tail = b""

    def restart(self) -> None:
        """A new response: forget the end of the last one."""
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream."""
        # A mark split between two chunks lies within this seam (and no whole one does).
        self.count += (self._tail + chunk[:_OVERLAP]).count(_MARK) + chunk.count(_MARK)
        self._tail = chunk[-_OVERLAP:]
        start = chunk.rfind(b"\nid: ")
        end = chunk.find(b"\n", start + 1) if start >= 0 else -1
        if end > 0:
            self.last_id = chunk[start + 5 : end].decode()


async def _follow(
    session: aiohttp.ClientSession, url: str, counter: _Counter, expected: int, ready: asyncio.Event
) -> None:
    while counter.count < expected:
        headers = dict(STREAM)
        if counter.last_id is not None:
            headers["Last-Event-ID"] = counter.last_id
            counter.reconnects += 1
        async with session.get(f"{url}/events", headers=headers) as response:
            if response.status != 200:
                raise BenchError(f"GET /events answered {response.status}")
            counter.restart()
            ready.set()
            async for chunk in response.content.iter_any():
                counter.feed(chunk)
                if counter.count >= expected:
                    return


async def _drain(ctx: Context, streams: int, label: str) -> tuple[float, int, int]:
    """Drain rate with `streams` clients following; (rate, short streams, reconnects)."""
    o = ctx.options
    tasks = o.stream_tasks
    async with ctx.database() as db:
        config = ctx.service_config(db.url, processors=o.drain_processors)
        async with running(config, 1) as deployment:
            url = deployment.urls[0]
            counters = [_Counter() for _ in range(streams)]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            ) as session:
                ready = [asyncio.Event() for _ in counters]
                followers = [
                    asyncio.create_task(_follow(session, url, c, 3 * tasks, r), name=f"stream-{n}")
                    for n, (c, r) in enumerate(zip(counters, ready, strict=True))
                ]
                async with asyncio.timeout(60):
                    await asyncio.gather(*(r.wait() for r in ready))
                await _insert_and_wait(ctx, db, tasks, config, label)
                window = await db.processing_window()
                try:
                    async with asyncio.timeout(120):
                        await asyncio.gather(*followers)
                except TimeoutError:
                    for follower in followers:
                        follower.cancel()
                    await asyncio.gather(*followers, return_exceptions=True)
    short = sum(1 for c in counters if c.count < 3 * tasks)
    return rate(window.tasks, window.seconds), short, sum(c.reconnects for c in counters)


async def _insert_and_wait(
    ctx: Context, db: BenchDatabase, tasks: int, config: ServiceConfig, label: str
) -> None:
    with ctx.progress.bar(f"{label} draining", tasks) as bar:
        await db.insert_waiting(tasks, at_once=True)  # the window is the drain alone

        def show(done: int) -> None:
            bar.set(done)

        await db.wait_terminal(tasks, timeout_for(tasks, config), show)
