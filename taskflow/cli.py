"""The `taskflow` command: `serve` runs the pipeline, `submit` creates tasks."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
import uvloop
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from taskflow import __version__
from taskflow.bench.options import add_arguments as add_bench_arguments
from taskflow.bench.options import from_args as bench_options
from taskflow.config import Settings
from taskflow.errors import ConfigError, TaskflowError

log = structlog.get_logger("taskflow.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"taskflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API, the AMQP consumer and the processors")
    submit = commands.add_parser("submit", help="create a task over HTTP or RabbitMQ")
    submit.add_argument("title")
    submit.add_argument("--description", default=None)
    submit.add_argument("--payload", default="{}", help="a JSON object")
    submit.add_argument("--via", choices=("http",), default="http")
    submit.add_argument("--url", default=None, help="service URL (default from TASKFLOW_HOST/PORT)")
    submit.add_argument("--key", default=None, help="idempotency key")
    bench = commands.add_parser(
        "bench",
        help="start a service, drive it, and print rates against baselines",
        description="Scenarios: http, amqp, drain, capacity, backlog (see the README's "
        "Performance section). Progress on stderr, the table (or --json) on stdout.",
    )
    add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"taskflow: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    if args.command == "bench":
        from taskflow.bench.runner import main as bench_main  # noqa: PLC0415

        return bench_main(bench_options(args, settings.amqp_url))
    return submit(settings, args)


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; 0 on a clean shutdown."""
    from taskflow.app import create_app  # noqa: PLC0415
    from taskflow.log import AccessLogger, configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level)
    log.info("taskflow starting", version=__version__, pid=os.getpid(), **settings.public())

    def stop_on_failure(_error: BaseException | None) -> None:
        signal.raise_signal(signal.SIGTERM)

    app = create_app(settings, on_failure=stop_on_failure)
    tune_gc()
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            loop=uvloop.new_event_loop(),
            access_log_class=AccessLogger,
            print=None,
            shutdown_timeout=settings.shutdown_grace_s,
        )
    except TaskflowError as exc:
        log.error("taskflow could not start", error=exc.message)
        return 1
    except OSError as exc:
        log.error("taskflow could not start", error=str(exc))
        return 1
    log.info("taskflow stopped")
    return 0


def tune_gc() -> None:
    """Fewer garbage collections for a process that allocates per request.

    CPython's default (a young collection every 700 allocations) runs hundreds of
    times a second under load, and each pause adds to the latency of every request in
    flight. Every 50,000 allocations instead: the p99 of `POST /tasks` at 64
    connections went from about 36 to 28 ms in the bench (creates/s within the noise);
    the memory cost is a few MB. (`gc.freeze()` at start-up was tried: no gain.)
    """
    gc.set_threshold(50_000, 50, 100)


def submit(settings: Settings, args: argparse.Namespace) -> int:
    """Create a task from the command line and print it (or what went wrong)."""
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        print(f"taskflow: --payload is not valid JSON: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"title": args.title, "payload": payload}
    if args.description is not None:
        body["description"] = args.description
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = args.url or f"http://{host}:{settings.port}"
    return asyncio.run(_post(url.rstrip("/") + "/tasks", body, args.key))


async def _post(url: str, body: dict[str, Any], key: str | None) -> int:
    headers = {"Idempotency-Key": key} if key else {}
    try:
        async with (
            ClientSession(timeout=ClientTimeout(total=30)) as session,
            session.post(url, json=body, headers=headers) as response,
        ):
            text = await response.text()
    except (ClientError, TimeoutError) as exc:
        print(f"taskflow: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0 if response.status in (200, 201) else 1
