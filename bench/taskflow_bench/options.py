"""The options of `taskflow-bench`, from the command line to one frozen object."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from taskflow.config import LOG_LEVELS, Settings

DEFAULT_SCENARIOS = (
    "http",
    "amqp",
    "amqp-e2e",
    "drain",
    "capacity",
    "capacity-amqp",
    "backlog",
    "cancel",
    "stream-latency",
    "stream-fanout",
    "store",
)
# Each stores a million tasks first (a minute or more): run only when named.
SCALE_SCENARIOS = ("large-table", "retention")
SCENARIOS = DEFAULT_SCENARIOS + SCALE_SCENARIOS
CLIENTS = ("auto", "aiohttp", "wrk")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run and how big; see `add_arguments` for each option's meaning."""

    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    repetitions: int = 3
    json: bool = False
    url: str | None = None
    database_admin_url: str = DEFAULT_ADMIN_URL
    amqp_url: str = DEFAULT_AMQP_URL
    instances: int = 1
    client: str = "auto"
    connections: int = 64
    duration_s: float = 10.0
    messages: int = 20_000
    drain_tasks: int = 50_000
    drain_processors: int = 2_000
    capacity_processors: int = 2_000
    capacity_seconds: float = 10.0
    backlog_small: int = 1_000
    backlog_large: int = 100_000
    backlog_seconds: float = 8.0
    cancel_running: int = 500
    cancel_count: int = 200
    stream_rate: float = 200.0
    stream_seconds: float = 10.0
    stream_clients: int = 200
    stream_tasks: int = 20_000
    store_tasks: int = 20_000
    large_tasks: int = 1_000_000
    large_drain_tasks: int = 20_000
    large_seconds: float = 5.0
    retention_tasks: int = 1_000_000
    retention_drain_tasks: int = 100_000
    processors: int = Settings().processors  # the product's default: measure what ships
    log_level: str = "warning"
    progress: bool = True


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or '(none)'}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `taskflow-bench` to `parser`."""
    d = BenchOptions()
    parser.add_argument(
        "scenarios",
        nargs="?",
        type=_scenarios,
        default=d.scenarios,
        help=f"comma-separated scenarios to run (default: {','.join(DEFAULT_SCENARIOS)}; "
        f"{' and '.join(SCALE_SCENARIOS)} store a million tasks and run only when named)",
    )
    parser.add_argument("-r", "--repetitions", type=_positive_int, default=d.repetitions)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--url", default=None, help="bench a running service instead (http scenario only)"
    )
    parser.add_argument(
        "--database-admin-url",
        default=d.database_admin_url,
        help="PostgreSQL where the bench creates (and drops) its database (%(default)s)",
    )
    parser.add_argument(
        "--amqp-url",
        default=None,
        help="RabbitMQ for the amqp scenario (default: AMQP_URL of the environment)",
    )
    parser.add_argument(
        "--instances",
        type=_positive_int,
        default=d.instances,
        help="service processes sharing the database (one per core: %(default)s)",
    )
    parser.add_argument("--client", choices=CLIENTS, default=d.client, help="HTTP load generator")
    parser.add_argument("-c", "--connections", type=_positive_int, default=d.connections)
    parser.add_argument(
        "-d", "--duration", dest="duration_s", type=_positive_float, default=d.duration_s
    )
    parser.add_argument("--messages", type=_positive_int, default=d.messages)
    parser.add_argument("--drain-tasks", type=_positive_int, default=d.drain_tasks)
    parser.add_argument(
        "--drain-processors",
        type=_positive_int,
        default=d.drain_processors,
        help="TASKFLOW_PROCESSORS of each instance in the drain scenario",
    )
    parser.add_argument(
        "--capacity-processors",
        type=_positive_int,
        default=d.capacity_processors,
        help="TASKFLOW_PROCESSORS of each instance in capacity and capacity-amqp",
    )
    parser.add_argument(
        "--capacity-seconds",
        type=_positive_float,
        default=d.capacity_seconds,
        help="ideal duration of capacity and capacity-amqp (tasks or messages = processors "
        "x seconds)",
    )
    parser.add_argument("--backlog-small", type=_positive_int, default=d.backlog_small)
    parser.add_argument("--backlog-large", type=_positive_int, default=d.backlog_large)
    parser.add_argument(
        "--backlog-seconds",
        type=_positive_float,
        default=d.backlog_seconds,
        help="how long memory is watched with each backlog",
    )
    parser.add_argument(
        "--cancel-running",
        type=_positive_int,
        default=d.cancel_running,
        help="attempts left running on the other instance while the cancels are measured",
    )
    parser.add_argument(
        "--cancel-count", type=_positive_int, default=d.cancel_count, help="cancels measured"
    )
    parser.add_argument(
        "--stream-rate",
        type=_positive_float,
        default=d.stream_rate,
        help="status changes per second made on the other instance (stream-latency)",
    )
    parser.add_argument("--stream-seconds", type=_positive_float, default=d.stream_seconds)
    parser.add_argument(
        "--stream-clients",
        type=_positive_int,
        default=d.stream_clients,
        help="open GET /events streams during the stream-fanout drain",
    )
    parser.add_argument("--stream-tasks", type=_positive_int, default=d.stream_tasks)
    parser.add_argument(
        "--store-tasks",
        type=_positive_int,
        default=d.store_tasks,
        help="tasks created claimed and finished by store, per batch size (%(default)s)",
    )
    parser.add_argument(
        "--large-tasks",
        type=_positive_int,
        default=d.large_tasks,
        help="terminal tasks stored before large-table measures (%(default)s)",
    )
    parser.add_argument(
        "--large-drain-tasks",
        type=_positive_int,
        default=d.large_drain_tasks,
        help="waiting tasks drained by large-table, near-empty and large (%(default)s)",
    )
    parser.add_argument(
        "--large-seconds",
        type=_positive_float,
        default=d.large_seconds,
        help="duration of each HTTP load of large-table (%(default)s)",
    )
    parser.add_argument(
        "--retention-tasks",
        type=_positive_int,
        default=d.retention_tasks,
        help="terminal tasks finished an hour ago that retention deletes (%(default)s)",
    )
    parser.add_argument(
        "--retention-drain-tasks",
        type=_positive_int,
        default=d.retention_drain_tasks,
        help="waiting tasks drained alone, then while the pruner runs (%(default)s)",
    )
    parser.add_argument(
        "--processors",
        type=_positive_int,
        default=d.processors,
        help="TASKFLOW_PROCESSORS of each instance for http, amqp, amqp-e2e, backlog and "
        "stream-latency (taskflow's default, %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=d.log_level,
        help="TASKFLOW_LOG_LEVEL of the service (info logs every status change)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def from_args(args: argparse.Namespace, default_amqp_url: str) -> BenchOptions:
    """The options parsed by a parser that `add_arguments` set up."""
    return BenchOptions(
        scenarios=args.scenarios,
        repetitions=args.repetitions,
        json=args.json,
        url=args.url,
        database_admin_url=args.database_admin_url,
        amqp_url=args.amqp_url or default_amqp_url,
        instances=args.instances,
        client=args.client,
        connections=args.connections,
        duration_s=args.duration_s,
        messages=args.messages,
        drain_tasks=args.drain_tasks,
        drain_processors=args.drain_processors,
        capacity_processors=args.capacity_processors,
        capacity_seconds=args.capacity_seconds,
        backlog_small=args.backlog_small,
        backlog_large=args.backlog_large,
        backlog_seconds=args.backlog_seconds,
        cancel_running=args.cancel_running,
        cancel_count=args.cancel_count,
        stream_rate=args.stream_rate,
        stream_seconds=args.stream_seconds,
        stream_clients=args.stream_clients,
        stream_tasks=args.stream_tasks,
        store_tasks=args.store_tasks,
        large_tasks=args.large_tasks,
        large_drain_tasks=args.large_drain_tasks,
        large_seconds=args.large_seconds,
        retention_tasks=args.retention_tasks,
        retention_drain_tasks=args.retention_drain_tasks,
        processors=args.processors,
        log_level=args.log_level,
        progress=args.progress,
    )
