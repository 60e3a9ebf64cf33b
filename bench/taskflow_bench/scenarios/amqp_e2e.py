"""amqp-e2e: `--messages` task messages wait in RabbitMQ; how fast are they all finished?

taskflow: the messages are published (with confirms) while the service is stopped; it
then starts with work 0 s and failure rate 0.1 and turns every message into a task that
ends `completed` or `failed`. The rate is the messages over the time from the first
`created_at` to the last `finished_at` (PostgreSQL's clock): intake, claim, work and
finish, with the three committed status changes of each task.

Peer, in the same repetition: Celery 5 on the same RabbitMQ (`taskflow_bench.celery_peer`:
a thread pool of 2, without gossip, mingle and heartbeat, no result backend, a no-op
task), the same number of task messages waiting in its queue before its worker starts;
its rate is the messages over the time from the first task's start to the last one's end.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from taskflow_bench import celery_peer
from taskflow_bench.harness.service import Service
from taskflow_bench.report import MetricSpec, Outcome, ScenarioResult, Target
from taskflow_bench.scenarios.amqp import PUBLISH_CHUNK, messages_waiting
from taskflow_bench.scenarios.context import Context
from taskflow_bench.server_cpu import seconds_of
from taskflow_bench.service import BenchError
from taskflow_bench.stats import rate, ratio

FAILURE_RATE = 0.1
POLL_S = 0.1

METRICS = (
    MetricSpec("tasks_per_s", "taskflow messages → finished tasks/s", "1/s"),
    MetricSpec("celery_per_s", "Celery messages → finished tasks/s", "1/s"),
    MetricSpec("ratio", "taskflow / Celery", "", 2),
    MetricSpec("cpu_us_per_task", "taskflow service CPU per task", "µs", 0),
    MetricSpec("pg_cpu_us_per_task", "PostgreSQL CPU per task", "µs", 0),
    MetricSpec("bad_histories", "tasks without their 3 status changes", ""),
)
TARGETS = (Target("ratio", ">=", 3.0), Target("bad_histories", "<=", 0))


async def run(ctx: Context) -> ScenarioResult:
    """Run the amqp-e2e scenario `--repetitions` times, Celery and taskflow in each."""
    o = ctx.options
    result = ScenarioResult(
        "amqp-e2e",
        {"messages": o.messages, "failure_rate": FAILURE_RATE, "instances": o.instances},
        METRICS,
        TARGETS,
    )
    if o.url:
        result.outcome, result.note = Outcome.SKIPPED, "needs a service started by the bench"
        return result
    connection = await aio_pika.connect_robust(o.amqp_url, timeout=10)
    async with connection:
        for rep in range(1, o.repetitions + 1):
            label = f"amqp-e2e {rep}/{o.repetitions}"
            peer = await celery_rate(ctx, connection, o.messages, label)
            run = await taskflow_rate(ctx, connection, o.messages, label)
            run |= {"celery_per_s": peer, "ratio": ratio(run["tasks_per_s"], peer)}
            result.runs.append(run)
    return result


async def taskflow_rate(
    ctx: Context, connection: AbstractRobustConnection, count: int, label: str
) -> dict[str, float]:
    """Tasks/s from the first message's commit to the last finish; the CPU time per task
    (µs, from the service's readiness to the last finish: steadier than the rate on a busy
    machine) of the service and of PostgreSQL (NaN when the server is remote); the tasks
    without their three status changes."""
    async with ctx.database() as db:
        config = ctx.service_config(db.url, failure_rate=FAILURE_RATE)
        meter = await db.server_cpu()
        async with (
            messages_waiting(ctx, connection, config, count, label),
            ctx.service(config) as service,
        ):
            ready_cpu_s = service.cpu_seconds()  # start-up (imports, migrations) left out
            ready_pg_s = seconds_of(meter)
            with ctx.progress.bar(f"{label} taskflow", count) as bar:
                await db.wait_terminal(count, 60 + count / 200, bar.set)
            cpu_s = service.cpu_seconds() - ready_cpu_s
            pg_s = seconds_of(meter) - ready_pg_s
        window = await db.end_to_end_window("amqp")
        bad = float(await db.incomplete_histories())
    tasks = max(1, window.tasks)
    return {
        "tasks_per_s": rate(window.tasks, window.seconds),
        "cpu_us_per_task": cpu_s * 1e6 / tasks,
        "pg_cpu_us_per_task": pg_s * 1e6 / tasks,
        "bad_histories": bad,
    }


async def celery_rate(
    ctx: Context, connection: AbstractRobustConnection, count: int, label: str
) -> float:
    """Tasks/s of a Celery worker from the first task's start to the last task's end."""
    queue = f"taskflow-bench-celery-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="taskflow-bench-celery-") as scratch:
        result = Path(scratch) / "result"
        try:
            async with connection.channel() as channel:
                # As Celery declares it: durable, classic, no arguments.
                await channel.declare_queue(queue, durable=True)
                with ctx.progress.bar(f"{label} publishing for Celery", count) as bar:
                    await publish_celery(channel, queue, count, bar.advance)
            env = {
                "PATH": "/usr/bin:/bin",
                celery_peer.BROKER: ctx.options.amqp_url,
                celery_peer.QUEUE: queue,
                celery_peer.EXPECTED: str(count),
                celery_peer.RESULT: str(result),
            }
            argv = (
                sys.executable, "-m", "celery", "-A", "taskflow_bench.celery_peer", "worker",
                "--pool", "threads", "-c", "2", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-Q", queue, "--loglevel", "WARNING",
            )  # fmt: skip
            worker = await Service.start("celery", env, argv=argv, port=0)
            try:
                with ctx.progress.bar(f"{label} Celery", count) as bar:
                    async with asyncio.timeout(60 + count / 200):
                        while not result.exists():
                            if not worker.running:
                                raise BenchError(f"the Celery worker exited:\n{worker.tail()}")
                            await asyncio.sleep(POLL_S)
                    bar.set(count)
            finally:
                await worker.stop(timeout=30)
            first, last, done = result.read_text().split()
        finally:
            async with connection.channel() as channel:
                await channel.queue_delete(queue)
    seconds = float(last) - float(first)
    return rate(int(done), seconds) if seconds > 0 else math.nan


def celery_message(task_id: str) -> aio_pika.Message:
    """A Celery task message (protocol 2, JSON) calling the peer's no-op task."""
    body = orjson.dumps(
        [[], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    headers: dict[str, object] = {
        "lang": "py",
        "task": celery_peer.TASK_NAME,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "shadow": None,
        "eta": None,
        "expires": None,
        "retries": 0,
        "timelimit": [None, None],
        "argsrepr": "()",
        "kwargsrepr": "{}",
        "origin": "taskflow-bench",
        "ignore_result": True,
    }
    return aio_pika.Message(
        body,
        headers=headers,  # type: ignore[arg-type]
        content_type="application/json",
        content_encoding="utf-8",
        correlation_id=task_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=0,
    )


async def publish_celery(
    channel: AbstractChannel, queue: str, count: int, advance: Callable[[int], object]
) -> None:
    """Publish `count` Celery task messages to `queue`, waiting for every confirm."""
    exchange = channel.default_exchange
    for start in range(0, count, PUBLISH_CHUNK):
        chunk = range(start, min(count, start + PUBLISH_CHUNK))
        await asyncio.gather(
            *(exchange.publish(celery_message(str(uuid.uuid4())), routing_key=queue) for _ in chunk)
        )
        advance(len(chunk))
