"""The `taskflow` command: `serve` runs the pipeline, `submit` creates tasks, `watch` follows."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
import uvloop
from aiohttp import web

from taskflow import __version__
from taskflow.config import Settings
from taskflow.errors import ConfigError, TaskflowError
from taskflow.submit import BadInput, post_many, post_one, publish_many, publish_one, read_bodies

log = structlog.get_logger("taskflow.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"taskflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API, the AMQP consumer and the processors")
    submit = commands.add_parser(
        "submit",
        help="create tasks over HTTP or RabbitMQ",
        description="Create a task (TITLE), N copies of it (--count) or one per line of a "
        "JSON-lines file (--file), over HTTP or RabbitMQ (with publisher confirms).",
    )
    submit.add_argument("title", nargs="?", help="the task's title (not with --file)")
    submit.add_argument("--description", default=None)
    submit.add_argument("--payload", default="{}", help="a JSON object")
    submit.add_argument("--via", choices=("http", "amqp"), default="http")
    submit.add_argument("--url", default=None, help="service URL (default from TASKFLOW_HOST/PORT)")
    submit.add_argument(
        "--key",
        default=None,
        help="idempotency key (HTTP Idempotency-Key, AMQP message_id); "
        "with --count or --file each task gets KEY-1, KEY-2, ...",
    )
    submit.add_argument("--count", type=int, default=1, metavar="N", help="create N such tasks")
    submit.add_argument(
        "--file", default=None, help="JSON lines, one task body per line ('-' for stdin)"
    )
    watch = commands.add_parser(
        "watch",
        help="follow a task's changes until it ends",
        description="Print each status change of task ID as a JSON line as it happens; exit 0 "
        "when it completes, 1 when it fails or is cancelled, 2 when there is no such task. "
        "Resumes by itself after a dropped connection.",
    )
    watch.add_argument("id", help="the task's id")
    watch.add_argument("--url", default=None, help="service URL (default from TASKFLOW_HOST/PORT)")
    watch.add_argument(
        "--token", default=None, help="API token (default: the TASKFLOW_TOKEN variable)"
    )
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
    if args.command == "watch":
        return watch_task(settings, args)
    return submit(settings, args)


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; 0 on a clean shutdown."""
    from taskflow.app import create_app  # noqa: PLC0415
    from taskflow.log import AccessLogger, configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level)
    log.info("taskflow starting", version=__version__, pid=os.getpid(), **settings.public())

    failures: list[BaseException | None] = []

    def stop_on_failure(error: BaseException | None) -> None:
        failures.append(error)
        signal.raise_signal(signal.SIGTERM)

    app = create_app(settings, amqp=True, on_failure=stop_on_failure)
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
    if failures:
        # A supervisor must see this as a crash (and restart the service), not a clean stop.
        log.error("taskflow stopped because an actor died", error=repr(failures[0]))
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
    """Create tasks from the command line and print what happened; 2 on bad input."""
    # Failures are reported below in one line; aiormq would log them a second time.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        bodies = _bodies(args)
    except BadInput as exc:
        print(f"taskflow: {exc}", file=sys.stderr)
        return 2
    url = service_url(settings, args.url) + "/tasks"
    if args.file is None and args.count == 1:
        if args.via == "amqp":
            return asyncio.run(
                publish_one(settings.amqp_url, settings.amqp_queue, bodies[0], args.key)
            )
        return asyncio.run(post_one(url, bodies[0], args.key))
    if args.via == "amqp":
        return asyncio.run(
            publish_many(settings.amqp_url, settings.amqp_queue, bodies, len(bodies), args.key)
        )
    return asyncio.run(post_many(url, bodies, len(bodies), args.key))


def service_url(settings: Settings, url: str | None) -> str:
    """`--url`, or the service at TASKFLOW_HOST/TASKFLOW_PORT (a wildcard host: loopback)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return (url or f"http://{host}:{settings.port}").rstrip("/")


def watch_task(settings: Settings, args: argparse.Namespace) -> int:
    """Follow one task's events; 0 completed, 1 failed or cancelled, 2 no such task."""
    from taskflow.watch import watch  # noqa: PLC0415

    token = args.token or os.environ.get("TASKFLOW_TOKEN")
    try:
        return asyncio.run(watch(service_url(settings, args.url), args.id, token))
    except KeyboardInterrupt:
        return 130


def _bodies(args: argparse.Namespace) -> list[bytes]:
    if args.file is not None:
        if args.title is not None or args.count != 1:
            raise BadInput("--file takes the tasks from the file: no TITLE or --count with it")
        return read_bodies(args.file)
    if args.title is None:
        raise BadInput("give a TITLE, or --file")
    if args.count < 1:
        raise BadInput("--count must be at least 1")
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"--payload is not valid JSON: {exc}") from None
    body: dict[str, Any] = {"title": args.title, "payload": payload}
    if args.description is not None:
        body["description"] = args.description
    return [orjson.dumps(body)] * args.count
