"""Runs the chosen scenarios one after the other and collects the report."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
import uvloop
from aio_pika.exceptions import AMQPError

from taskflow import __version__
from taskflow.errors import TaskflowError
from taskflow_bench.load import choose_client
from taskflow_bench.options import BenchOptions
from taskflow_bench.progress import Progress
from taskflow_bench.report import Outcome, Report, ScenarioResult, render_table
from taskflow_bench.scenarios import (
    amqp,
    amqp_e2e,
    backlog,
    cancel,
    capacity,
    drain,
    http,
    large_table,
    retention,
    store,
    streams,
)
from taskflow_bench.scenarios.context import Context

log = structlog.get_logger(__name__)

Scenario = Callable[[Context], Awaitable[ScenarioResult]]
SCENARIOS: dict[str, Scenario] = {
    "http": http.run,
    "amqp": amqp.run,
    "amqp-e2e": amqp_e2e.run,
    "drain": drain.run,
    "capacity": capacity.run,
    "capacity-amqp": capacity.run_amqp,
    "backlog": backlog.run,
    "cancel": cancel.run,
    "stream-latency": streams.run_latency,
    "stream-fanout": streams.run_fanout,
    "store": store.run,
    "large-table": large_table.run,
    "retention": retention.run,
}
# What can go wrong outside the bench's control: report it, go on with the next scenario.
_FAILURES = (TaskflowError, OSError, TimeoutError, asyncpg.PostgresError, AMQPError, ValueError)


def _interpreter() -> str:
    """The Python binary the bench and its services run on. Which build it is matters: a
    PGO/LTO one cost taskflow 17 to 33 % less CPU than one without either and with a
    shared libpython (README, "The Python build")."""
    return os.path.realpath(sys.executable)


async def environment(options: BenchOptions, client: str) -> dict[str, object]:
    """Where and how the run happens, for the report."""
    server = "unknown"
    try:
        conn = await asyncpg.connect(options.database_admin_url, timeout=10)
        try:
            server = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError):
        pass
    load = os.getloadavg()
    return {
        "taskflow": __version__,
        "python": platform.python_version(),
        "python_executable": _interpreter(),
        "postgresql": server,
        "cpus": os.cpu_count(),
        "load_before": f"{load[0]:.2f}",
        "client": client,
        "instances": options.instances,
        "service_log_level": options.log_level,
    }


async def run_bench(options: BenchOptions) -> Report:
    """Run every scenario of `options` and return the report."""
    client = choose_client(options.client)
    ctx = Context(options, client, Progress(options.progress))
    report = Report(await environment(options, client), options.repetitions)
    for name in options.scenarios:
        try:
            result = await SCENARIOS[name](ctx)
        except _FAILURES as exc:
            log.error("scenario failed", scenario=name, error=str(exc))
            result = ScenarioResult(name, {}, (), outcome=Outcome.FAILED, note=_one_line(exc))
        report.scenarios.append(result)
    return report


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


async def _until_stopped(options: BenchOptions) -> Report | None:
    """`run_bench`, cancelled by SIGTERM (SIGINT too, through asyncio's runner) so that
    the services it started are stopped and its databases dropped; None then."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_bench(options)
    except asyncio.CancelledError:
        return None


def main(options: BenchOptions) -> int:
    """Run the bench and print the table or JSON; 1 when a scenario failed, 130 if stopped."""
    report = uvloop.run(_until_stopped(options))
    if report is None:
        print("taskflow-bench: stopped", file=sys.stderr)
        return 130
    if options.json:
        sys.stdout.write(report.to_json().decode() + "\n")
    else:
        print(render_table(report))
    return 1 if any(s.outcome is Outcome.FAILED for s in report.scenarios) else 0
