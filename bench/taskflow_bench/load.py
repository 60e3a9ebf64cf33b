"""HTTP load generators: wrk (when installed) or an aiohttp client, one result shape.

Both keep `connections` requests in flight (closed loop) for `duration_s` seconds and
report the count, the responses whose status was not the expected one, connection
errors, and a latency histogram in microseconds, so percentiles come from one function.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector
from aiohttp.client import _RequestContextManager

from taskflow_bench.stats import histogram, merge, percentile, rate

BODY = orjson.dumps({"title": "bench", "payload": {"size": 1}})
MARKER = "TASKFLOW-BENCH "

# Runs in wrk: POSTs BODY, counts unexpected statuses per thread, and prints the totals
# and the latency histogram ({microseconds: count}) as one JSON line.
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) unexpected = 0 end
function response(status, headers, body)
  if status ~= %(expected)d then unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("unexpected") end
  local e = summary.errors
  local parts = {}
  for i = 1, #latency do
    local v, c = latency(i)
    parts[#parts + 1] = string.format('"%%d":%%d', v, c)
  end
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"unexpected":%%d,"errors":%%d,"hist":{%%s}}\\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write + e.timeout,
    table.concat(parts, ",")))
end
"""


@dataclass(slots=True)
class LoadResult:
    """What one load run saw."""

    requests: int = 0
    seconds: float = 0.0
    unexpected: int = 0
    errors: int = 0
    latency_us: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Responses per second (all statuses)."""
        return rate(self.requests, self.seconds)

    def latency_ms(self, q: float) -> float:
        """The `q`-th latency percentile in milliseconds."""
        return percentile(self.latency_us, q) / 1000

    @classmethod
    def combine(cls, parts: Sequence[LoadResult]) -> LoadResult:
        """Runs side by side (one per instance) as one: counts add up, histograms merge."""
        return cls(
            requests=sum(p.requests for p in parts),
            seconds=max((p.seconds for p in parts), default=0.0),
            unexpected=sum(p.unexpected for p in parts),
            errors=sum(p.errors for p in parts),
            latency_us=merge(p.latency_us for p in parts),
        )


def choose_client(wanted: str) -> str:
    """`wrk` or `aiohttp`: `auto` takes wrk when it is on PATH."""
    if wanted == "auto":
        return "wrk" if shutil.which("wrk") else "aiohttp"
    return wanted


def split_connections(connections: int, targets: int) -> list[int]:
    """Spread `connections` over `targets` as evenly as possible (each gets at least one)."""
    base, extra = divmod(max(connections, targets), targets)
    return [base + (1 if i < extra else 0) for i in range(targets)]


def parse_wrk_output(text: str) -> LoadResult:
    """The result line the wrk script printed."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            data = orjson.loads(line[len(MARKER) :])
            return LoadResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1_000_000,
                unexpected=int(data["unexpected"]),
                errors=int(data["errors"]),
                latency_us=Counter({int(k): int(v) for k, v in data["hist"].items()}),
            )
    raise ValueError(f"wrk printed no result line:\n{text[-2000:]}")


def wrk_script(body: bytes, expected: int) -> str:
    """The Lua script that wrk runs."""
    return _WRK_SCRIPT % {"body": body.decode(), "expected": expected, "marker": MARKER}


async def run_load(
    client: str,
    urls: Sequence[str],
    *,
    connections: int,
    duration_s: float,
    expected: int = 201,
    path: str = "/tasks",
    body: bytes = BODY,
) -> LoadResult:
    """POST `body` to `path` on every url in `urls` for `duration_s` with `connections` in all."""
    shares = split_connections(connections, len(urls))
    if client == "wrk":
        with tempfile.TemporaryDirectory(prefix="taskflow-bench-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(wrk_script(body, expected))
            parts = await asyncio.gather(
                *(
                    _wrk(url + path, script, share, duration_s, threads=max(1, 2 // len(urls)))
                    for url, share in zip(urls, shares, strict=True)
                )
            )
    else:
        parts = await asyncio.gather(
            *(
                _aiohttp(url + path, share, duration_s, body, expected)
                for url, share in zip(urls, shares, strict=True)
            )
        )
    return LoadResult.combine(parts)


async def _wrk(
    url: str, script: Path, connections: int, duration_s: float, threads: int
) -> LoadResult:
    threads = min(threads, connections)
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(duration_s + 60):
        out, _ = await proc.communicate()
    return parse_wrk_output(out.decode(errors="replace"))


async def _aiohttp(
    url: str, connections: int, duration_s: float, body: bytes, expected: int
) -> LoadResult:
    headers = {"Content-Type": "application/json"}
    return await _closed_loop(
        connections,
        duration_s,
        expected,
        lambda session: session.post(url, data=body, headers=headers),
    )


async def _closed_loop(
    connections: int,
    duration_s: float,
    expected: int,
    request: Callable[[ClientSession], _RequestContextManager],
) -> LoadResult:
    """`connections` workers each sending `request(session)` one after the other for
    `duration_s`, with the aiohttp client: counts, errors, unexpected statuses, latencies."""
    result = LoadResult()
    latencies: list[float] = []
    connector = TCPConnector(limit=connections)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                try:
                    async with request(session) as response:
                        await response.read()
                        status = response.status
                except (ClientError, TimeoutError):
                    result.errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                result.requests += 1
                if status != expected:
                    result.unexpected += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        result.seconds = time.perf_counter() - started
    result.latency_us = histogram(latencies)
    return result


async def run_get_load(
    urls: Sequence[str],
    paths: Sequence[str],
    *,
    connections: int,
    duration_s: float,
    expected: int = 200,
) -> LoadResult:
    """GET `paths` in turn (closed loop, `connections` in all, spread over `urls`) for
    `duration_s`, with the aiohttp client (wrk would need a script per path list)."""
    if not paths:
        raise ValueError("no path to GET")
    shares = split_connections(connections, len(urls))
    parts = await asyncio.gather(
        *(
            _aiohttp_get(url, paths, share, duration_s, expected)
            for url, share in zip(urls, shares, strict=True)
        )
    )
    return LoadResult.combine(parts)


async def _aiohttp_get(
    url: str, paths: Sequence[str], connections: int, duration_s: float, expected: int
) -> LoadResult:
    turn = itertools.count()
    return await _closed_loop(
        connections,
        duration_s,
        expected,
        lambda session: session.get(url + paths[next(turn) % len(paths)]),
    )
