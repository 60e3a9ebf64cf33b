"""The `taskflow` command: `serve` runs the pipeline, `submit` creates tasks, `watch` follows
one, `cancel` and `retry` control them, `dead-letters` lists and replays refused messages."""

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
    add_token_argument(submit)
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
    _add_control(commands)
    watch = commands.add_parser(
        "watch",
        help="follow a task's changes until it ends",
        description="Print each status change of task ID as a JSON line as it happens; exit 0 "
        "when it completes, 1 when it fails or is cancelled, 2 when there is no such task. "
        "Resumes by itself after a dropped connection.",
    )
    watch.add_argument("id", help="the task's id")
    watch.add_argument("--url", default=None, help="service URL (default from TASKFLOW_HOST/PORT)")
    add_token_argument(watch)
    return parser


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    """`--token` for a command that calls the service's HTTP API."""
    parser.add_argument(
        "--token",
        default=None,
        help="API token sent as 'Authorization: Bearer' when the service has tokens "
        "(default: TASKFLOW_TOKEN; better than --token, which other users may see in ps)",
    )


def _add_control(commands: Any) -> None:
    """The subcommands of `taskflow.control_commands`."""
    for action, what in (("cancel", "cancel tasks"), ("retry", "retry failed or cancelled tasks")):
        command = commands.add_parser(
            action,
            help=what,
            description=f"{what.capitalize()} by id, through the service's bulk route; one "
            "JSON line per id. Exit 1 when any id is a conflict or not found.",
        )
        command.add_argument("ids", nargs="+", metavar="ID")
        command.add_argument("--reason", default=None, help="up to 500 characters")
        command.add_argument(
            "--url", default=None, help="service URL (default from TASKFLOW_HOST/PORT)"
        )
        add_token_argument(command)
    dead = commands.add_parser(
        "dead-letters", help="list or replay the messages in the dead-letter queue"
    )
    dead_commands = dead.add_subparsers(dest="dead_command", required=True)
    dead_commands.add_parser(
        "list", help="print each dead letter (reason, message_id, body); removes nothing"
    )
    replay = dead_commands.add_parser(
        "replay",
        help="publish dead letters back to the intake queue (at most 5 times each)",
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", action="append", dest="message_ids", metavar="MESSAGE_ID", help="repeatable"
    )
    which.add_argument("--all", action="store_true", help="every dead letter")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")


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
    if args.command in ("cancel", "retry", "dead-letters"):
        return control(settings, args)
    if args.command == "watch":
        return watch_task(settings, args)
    return submit(settings, args)


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; 0 on a clean shutdown."""
    from taskflow.api.protocol import run_app  # noqa: PLC0415
    from taskflow.app import create_app  # noqa: PLC0415
    from taskflow.log import AccessLogger, configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level, settings.secrets())
    log.info("taskflow starting", version=__version__, pid=os.getpid(), **settings.public())

    failures: list[BaseException | None] = []

    def stop_on_failure(error: BaseException | None) -> None:
        failures.append(error)
        signal.raise_signal(signal.SIGTERM)

    app = create_app(settings, amqp=True, on_failure=stop_on_failure)
    tune_gc()
    try:
        run_app(
            app,
            host=settings.host,
            port=settings.port,
            loop=uvloop.new_event_loop(),
            access_log_class=AccessLogger,
            shutdown_timeout=settings.shutdown_grace_s,
        )
    except TaskflowError as exc:
        log.error("taskflow could not start", error=exc.message)
        return 1
    except OSError as exc:
        log.error("taskflow could not start", error=str(exc))
        return 1
    except Exception:
        # Through the log (whose lines are redacted), not Python's bare traceback.
        log.exception("taskflow crashed")
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
    token = args.token or settings.client_token
    if args.file is None and args.count == 1:
        if args.via == "amqp":
            return asyncio.run(
                publish_one(
                    settings.amqp_url,
                    settings.amqp_queue,
                    bodies[0],
                    args.key,
                    queue_type=settings.amqp_queue_type,
                )
            )
        return asyncio.run(post_one(url, bodies[0], args.key, token))
    if args.via == "amqp":
        return asyncio.run(
            publish_many(
                settings.amqp_url,
                settings.amqp_queue,
                bodies,
                len(bodies),
                args.key,
                queue_type=settings.amqp_queue_type,
            )
        )
    return asyncio.run(post_many(url, bodies, len(bodies), args.key, token))


def control(settings: Settings, args: argparse.Namespace) -> int:
    """`taskflow cancel|retry` over HTTP, `taskflow dead-letters` on RabbitMQ."""
    from taskflow import control_commands  # noqa: PLC0415

    if args.command == "dead-letters":
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # failures: one line below
        if args.dead_command == "list":
            return asyncio.run(
                control_commands.dead_letters_list(settings.amqp_url, settings.amqp_queue)
            )
        return asyncio.run(
            control_commands.dead_letters_replay(
                settings.amqp_url,
                settings.amqp_queue,
                None if args.all else args.message_ids,
                dry_run=args.dry_run,
            )
        )
    return asyncio.run(
        control_commands.control(
            service_url(settings, args.url),
            args.command,
            args.ids,
            args.reason,
            args.token or settings.client_token,
        )
    )


def service_url(settings: Settings, url: str | None) -> str:
    """`--url`, or the service at TASKFLOW_HOST/TASKFLOW_PORT (a wildcard host: loopback)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return (url or f"http://{host}:{settings.port}").rstrip("/")


def watch_task(settings: Settings, args: argparse.Namespace) -> int:
    """Follow one task's events; 0 completed, 1 failed or cancelled, 2 no such task."""
    from taskflow.watch import watch  # noqa: PLC0415

    token = args.token or settings.client_token
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
