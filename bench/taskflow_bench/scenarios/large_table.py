"""large-table: the same measurements on a near-empty database and on one that stores
`--large-tasks` (1,000,000) terminal tasks; each rate's ratio, large over near-empty.

Each phase, on a fresh database (the near-empty one first, then the large one, whose
tasks are copied in before): `--large-drain-tasks` waiting tasks are copied in, the
service starts with `--drain-processors` processors and 5 % of attempts failing (the same
share as the stored tasks, so that `?status=failed` pages are full in both phases) and
drains them (its rate, and the mean time of its batches of outcomes, where a plan
that flips with the table's size shows first); then, `--large-seconds` each with
`--connections` clients: `POST /tasks`,
`GET /tasks/{id}` of ids taken at random from the whole table, `GET
/tasks?status=failed&limit=50`, and, when the service has them (its OpenAPI document
says so), `GET /stats` and `GET /tasks?q=<prefix>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import aiohttp

from taskflow.api.openapi import DOCUMENT_PATH
from taskflow_bench.database import BenchDatabase
from taskflow_bench.load import LoadResult, run_get_load, run_load
from taskflow_bench.report import MetricSpec, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.scenarios.drain import mean_finish_batch_ms
from taskflow_bench.scenarios.scale import Drain, store
from taskflow_bench.service import BenchError
from taskflow_bench.stats import rate, ratio

FAILURE_RATE = 0.05
GET_SAMPLE = 5_000  # ids looked up in turn by the GET /tasks/{id} load
SETTLE_TIMEOUT_S = 300.0
LIST_FAILED = "/tasks?status=failed&limit=50"
STATS = "/stats"
SEARCH_PREFIX = "bench 1"  # the drained tasks' titles are `bench <n>`, the stored `stored <n>`
PHASES = ("empty", "large")
RATIO_TARGET = 1 / 1.2  # "within 1.2 times the near-empty rates"

METRICS = (
    MetricSpec("store_s", "storing the tasks: COPY + VACUUM ANALYZE", "s", 1),
    MetricSpec("empty_drain_per_s", "drain, near-empty", "1/s"),
    MetricSpec("large_drain_per_s", "drain, large", "1/s"),
    MetricSpec("drain_ratio", "drain, large / near-empty", "", 2),
    MetricSpec("empty_finish_batch_ms", "drain's mean finish batch, near-empty", "ms", 1),
    MetricSpec("large_finish_batch_ms", "drain's mean finish batch, large", "ms", 1),
    MetricSpec("empty_creates_per_s", "POST /tasks, near-empty", "1/s"),
    MetricSpec("large_creates_per_s", "POST /tasks, large", "1/s"),
    MetricSpec("creates_ratio", "POST /tasks, large / near-empty", "", 2),
    MetricSpec("empty_get_per_s", "GET /tasks/{id}, near-empty", "1/s"),
    MetricSpec("large_get_per_s", "GET /tasks/{id}, large", "1/s"),
    MetricSpec("get_ratio", "GET /tasks/{id}, large / near-empty", "", 2),
    MetricSpec("empty_get_p99_ms", "GET /tasks/{id} p99, near-empty", "ms", 1),
    MetricSpec("large_get_p99_ms", "GET /tasks/{id} p99, large", "ms", 1),
    MetricSpec("empty_list_failed_p99_ms", "GET ?status=failed p99, near-empty", "ms", 1),
    MetricSpec("large_list_failed_p99_ms", "GET ?status=failed p99, large", "ms", 1),
    MetricSpec("list_failed_ratio", "GET ?status=failed rate, large / near-empty", "", 2),
    MetricSpec("empty_stats_p99_ms", "GET /stats p99, near-empty", "ms", 1),
    MetricSpec("large_stats_p99_ms", "GET /stats p99, large", "ms", 1),
    MetricSpec("empty_search_p99_ms", "GET ?q=prefix p99, near-empty", "ms", 1),
    MetricSpec("large_search_p99_ms", "GET ?q=prefix p99, large", "ms", 1),
    MetricSpec("unexpected", "responses with an unexpected status", ""),
)
TARGETS = (
    Target("drain_ratio", ">=", round(RATIO_TARGET, 2)),
    Target("creates_ratio", ">=", round(RATIO_TARGET, 2)),
    Target("get_ratio", ">=", round(RATIO_TARGET, 2)),
    Target("unexpected", "<=", 0),
)


async def run(ctx: Context) -> ScenarioResult:
    """Run the large-table scenario `--repetitions` times."""
    o = ctx.options
    result = ScenarioResult(
        "large-table",
        {
            "stored": o.large_tasks,
            "drained": o.large_drain_tasks,
            "seconds": o.large_seconds,
            "connections": o.connections,
            "processors": o.drain_processors,
            "instances": o.instances,
            "client": "aiohttp",
        },
        METRICS,
        TARGETS,
    )
    skipped: set[str] = set()
    for rep in range(1, o.repetitions + 1):
        run: dict[str, float] = {"unexpected": 0.0}
        for phase in PHASES:
            label = f"large-table {rep}/{o.repetitions} {phase}"
            async with ctx.database() as db:
                if phase == "large":
                    run["store_s"] = await store(ctx, db, o.large_tasks, label)
                measured, absent = await _phase(ctx, db, label)
            skipped |= absent
            run["unexpected"] += measured.pop("unexpected")
            run.update({f"{phase}_{key}": value for key, value in measured.items()})
        for key in ("drain", "creates", "get", "list_failed"):
            run[f"{key}_ratio"] = ratio(run[f"large_{key}_per_s"], run[f"empty_{key}_per_s"])
        result.runs.append(run)
    if skipped:
        result.note = f"not measured, the service has no {' nor '.join(sorted(skipped))}"
    return result


async def _phase(ctx: Context, db: BenchDatabase, label: str) -> tuple[dict[str, float], set[str]]:
    """One database's measurements, and the endpoints the service lacks."""
    o = ctx.options
    drain = Drain(ctx, db, o.large_drain_tasks, label)
    await drain.prepare()
    config = ctx.service_config(
        db.url,
        processors=o.drain_processors,
        extra_env={"TASKFLOW_FAILURE_RATE": str(FAILURE_RATE)},
    )
    out: dict[str, float] = {}
    loads: list[LoadResult] = []
    async with ctx.service(config) as service:
        urls = service.urls
        out["drain_per_s"] = await drain.measure(config)
        out["finish_batch_ms"] = await mean_finish_batch_ms(service)

        async with ctx.progress.timed(f"{label}: POST /tasks", o.large_seconds):
            creates = await run_load(
                ctx.client, urls, connections=o.connections, duration_s=o.large_seconds
            )
        loads.append(creates)
        out["creates_per_s"] = rate(creates.requests - creates.unexpected, creates.seconds)
        with ctx.progress.bar(f"{label}: processing the created tasks", 1) as bar:
            await db.wait_unfinished(SETTLE_TIMEOUT_S)
            bar.advance(1)

        ids = await db.sample_ids(GET_SAMPLE)
        gets = await _get(ctx, urls, [f"/tasks/{i}" for i in ids], f"{label}: GET /tasks/{{id}}")
        loads.append(gets)
        out["get_per_s"] = gets.rate
        out["get_p99_ms"] = gets.latency_ms(99)

        listed = await _get(ctx, urls, [LIST_FAILED], f"{label}: GET {LIST_FAILED}")
        loads.append(listed)
        out["list_failed_per_s"] = listed.rate
        out["list_failed_p99_ms"] = listed.latency_ms(99)

        has_stats, has_search = await _capabilities(urls[0])
        absent: set[str] = set()
        if has_stats:
            stats = await _get(ctx, urls, [STATS], f"{label}: GET {STATS}")
            loads.append(stats)
            out["stats_p99_ms"] = stats.latency_ms(99)
        else:
            absent.add("GET /stats")
        if has_search:
            path = f"/tasks?q={quote(SEARCH_PREFIX)}&limit=50"
            search = await _get(ctx, urls, [path], f"{label}: GET {path}")
            loads.append(search)
            out["search_p99_ms"] = search.latency_ms(99)
        else:
            absent.add("GET /tasks?q=")
    out["unexpected"] = float(sum(load.unexpected + load.errors for load in loads))
    return out, absent


async def _get(ctx: Context, urls: Sequence[str], paths: Sequence[str], label: str) -> LoadResult:
    if not paths:
        raise BenchError("no task to GET: the database is empty")
    seconds = ctx.options.large_seconds
    async with ctx.progress.timed(label, seconds):
        return await run_get_load(
            urls, paths, connections=ctx.options.connections, duration_s=seconds
        )


async def _capabilities(url: str) -> tuple[bool, bool]:
    """Whether the service has `GET /stats` and a `q` parameter on `GET /tasks`, by its
    OpenAPI document (an unknown query parameter is ignored, not refused)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(base_url=url, timeout=timeout) as session,
        session.get(DOCUMENT_PATH) as response,
    ):
        if response.status != 200:
            raise BenchError(f"GET {DOCUMENT_PATH}: HTTP {response.status}")
        document = await response.json()
    paths = document.get("paths", {})
    parameters = paths.get("/tasks", {}).get("get", {}).get("parameters", [])
    has_search = any(p.get("name") == "q" and p.get("in") == "query" for p in parameters)
    return STATS in paths, has_search
