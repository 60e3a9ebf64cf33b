"""amqp: `--messages` task messages waiting in RabbitMQ; how fast do they become tasks?

Baseline: the same number of messages on a scratch queue, consumed by a bare aio-pika
consumer that acks each message (prefetch `PREFETCH`). taskflow: the messages are
published (with confirms) while the service is stopped, then it starts and consumes
them. Both rates count the messages between the 10th and 90th percentile of their
ack (baseline) or commit (taskflow, `created_at`) times, leaving out start-up and tail.
Beside the rates, the CPU time per message of each (taskflow's service from its readiness
to the last commit; the bare consumer, which runs in the bench's own process, while it
consumes) and their ratio: the bare consumer's cost over taskflow's, which says how
cheap taskflow's intake is without depending on how busy the machine's cores are.
The service processes the tasks (no work, so claims and finishes) while it takes the
messages in, on the same thread; the bare consumer only acks. So each repetition also
runs taskflow once more with processing held off (`HELD_OFF_WORK_S` of work: the first
tasks are claimed and nothing finishes inside the window), and reports that rate and
CPU ratio too: what taking a message in costs by itself. The target stays on the first.
A service without an AMQP consumer (its readiness never says `consuming`) is reported
as "consumer not available", with the baseline still measured.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from taskflow_bench.database import POLL_S
from taskflow_bench.harness.tasks import get_json
from taskflow_bench.report import MetricSpec, Outcome, ScenarioResult, Target
from taskflow_bench.scenarios.context import Context
from taskflow_bench.service import BenchError, Deployment, ServiceConfig
from taskflow_bench.stats import per_unit_us, quantile_index, rate, ratio, steady_rate

BASELINE_ONLY = "only the aio-pika baseline was measured"
PREFETCH = 1000
PUBLISH_CHUNK = 1000
CONSUMER_WAIT_S = 10.0
HELD_OFF_WORK_S = 600.0
LOW, HIGH = 0.1, 0.9

METRICS = (
    MetricSpec("tasks_per_s", "taskflow messages → committed tasks/s", "1/s"),
    MetricSpec("baseline_per_s", "aio-pika consume-and-ack/s", "1/s"),
    MetricSpec("ratio", "taskflow / aio-pika", "", 2),
    MetricSpec("cpu_us_per_message", "taskflow service CPU per message", "µs", 0),
    MetricSpec("baseline_cpu_us_per_message", "aio-pika consumer CPU per message", "µs", 0),
    MetricSpec("cpu_ratio", "aio-pika CPU / taskflow CPU per message", "", 2),
    MetricSpec("intake_per_s", "taskflow messages → tasks/s, processing held off", "1/s"),
    MetricSpec("intake_ratio", "the same / aio-pika", "", 2),
    MetricSpec("intake_cpu_ratio", "aio-pika CPU / taskflow CPU, processing held off", "", 2),
)
TARGETS = (Target("ratio", ">=", 1.0),)


async def run(ctx: Context) -> ScenarioResult:
    """Run the amqp scenario `--repetitions` times (or say why it cannot)."""
    o = ctx.options
    result = ScenarioResult(
        "amqp",
        {"messages": o.messages, "baseline_prefetch": PREFETCH, "instances": o.instances},
        METRICS,
        TARGETS,
    )
    if o.url:
        result.outcome, result.note = Outcome.SKIPPED, "needs a service started by the bench"
        return result
    connection = await aio_pika.connect_robust(o.amqp_url, timeout=10)
    async with connection:
        available = True
        for rep in range(1, o.repetitions + 1):
            label = f"amqp {rep}/{o.repetitions}"
            baseline = await raw_consume_rate(ctx, connection, o.messages, label)
            tasks = intake = Consumed(math.nan, math.nan)
            if available:
                state, measured = await taskflow_rate(ctx, connection, label)
                if measured is None:
                    available = False
                    result.note = f"consumer not available (amqp state: {state}): {BASELINE_ONLY}"
                else:
                    tasks = measured
                    _, alone = await taskflow_rate(
                        ctx, connection, f"{label} processing held off", HELD_OFF_WORK_S
                    )
                    intake = alone or intake
            result.runs.append(
                {
                    "tasks_per_s": tasks.per_s,
                    "baseline_per_s": baseline.per_s,
                    "ratio": ratio(tasks.per_s, baseline.per_s),
                    "cpu_us_per_message": tasks.cpu_us,
                    "baseline_cpu_us_per_message": baseline.cpu_us,
                    "cpu_ratio": ratio(baseline.cpu_us, tasks.cpu_us),
                    "intake_per_s": intake.per_s,
                    "intake_ratio": ratio(intake.per_s, baseline.per_s),
                    "intake_cpu_ratio": ratio(baseline.cpu_us, intake.cpu_us),
                }
            )
    return result


@dataclass(frozen=True)
class Consumed:
    """How fast one consumer took the messages in, and its CPU time per message."""

    per_s: float
    cpu_us: float


async def taskflow_rate(
    ctx: Context, connection: AbstractRobustConnection, label: str, work_s: float = 0.0
) -> tuple[str, Consumed | None]:
    """The consumer's state and its messages/s to committed tasks (None: no consumer),
    with the service's CPU time per message from its readiness to the last commit, for a
    service whose attempts take `work_s`."""
    count = ctx.options.messages
    async with ctx.database() as db:
        config = ctx.service_config(db.url, work_s=work_s)
        try:
            async with (
                messages_waiting(ctx, connection, config, count, label),
                ctx.service(config) as service,
            ):
                ready_cpu_s = service.cpu_seconds()  # start-up (imports, migrations) left out
                with ctx.progress.bar(f"{label} consuming", count) as bar:
                    async with asyncio.timeout(60 + count / 200):
                        while (done := await db.source_count("amqp")) < count:
                            bar.set(done)
                            await asyncio.sleep(POLL_S)
                cpu_s = service.cpu_seconds() - ready_cpu_s
        except ConsumerUnavailable as exc:
            return exc.state, None
        window = await db.creation_window("amqp", LOW, HIGH)
    counted = quantile_index(window.tasks, HIGH) - quantile_index(window.tasks, LOW)
    return "consuming", Consumed(rate(counted, window.seconds), per_unit_us(cpu_s, count))


class ConsumerUnavailable(BenchError):
    """The service's AMQP consumer did not reach `consuming` (its readiness says `state`)."""

    def __init__(self, state: str) -> None:
        super().__init__(f"the AMQP consumer is not available (state: {state})")
        self.state = state


@asynccontextmanager
async def messages_waiting(
    ctx: Context,
    connection: AbstractRobustConnection,
    config: ServiceConfig,
    count: int,
    label: str,
) -> AsyncIterator[None]:
    """`count` task messages (`message`) waiting in the intake queue of `config` while no
    service runs (the queues go with the database `config` was made for: see
    `Context.database`).

    The service is started once first and stopped again, so that its own consumer
    declares the queues (type and arguments as it wants them); `ConsumerUnavailable` if
    it never consumes. Start the service inside the block to measure its intake.
    """
    state = await consumer_state(ctx, config)
    if state != "consuming":
        raise ConsumerUnavailable(state)
    async with connection.channel() as channel:
        with ctx.progress.bar(f"{label} publishing", count) as bar:
            await publish(channel, config.amqp_queue, count, bar.advance)
    yield


async def consumer_state(ctx: Context, config: ServiceConfig) -> str:
    """Start the service once (its consumer declares the queue) and report its AMQP state."""
    state = "unknown"
    async with ctx.service(config) as service:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONSUMER_WAIT_S
        while loop.time() < deadline:
            state = await _amqp_state(service)
            if state == "consuming":
                break
            await asyncio.sleep(0.2)
    return state


async def _amqp_state(service: Deployment) -> str:
    states = set()
    for instance in service.instances:
        async with instance.client() as http:
            body = await get_json(http, "/health/ready")
        states.add(str(body.get("amqp", {}).get("state", "unknown")))
    return states.pop() if len(states) == 1 else ",".join(sorted(states))


def message(n: int) -> aio_pika.Message:
    """Task message number `n`: the same JSON body as `POST /tasks`."""
    return aio_pika.Message(
        orjson.dumps({"title": f"bench {n}", "payload": {"n": n}}),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def publish(
    channel: AbstractChannel, queue: str, count: int, advance: Callable[[int], object]
) -> None:
    """Publish `count` messages to `queue`, waiting for every confirm (in chunks)."""
    exchange = channel.default_exchange
    for start in range(0, count, PUBLISH_CHUNK):
        chunk = range(start, min(count, start + PUBLISH_CHUNK))
        await asyncio.gather(
            *(exchange.publish(message(n), routing_key=queue, mandatory=True) for n in chunk)
        )
        advance(len(chunk))


async def raw_consume_rate(
    ctx: Context, connection: AbstractRobustConnection, count: int, label: str
) -> Consumed:
    """Messages/s of a bare aio-pika consumer acking each message, on a scratch queue, and
    its CPU time per message (the bench's own process while it consumes)."""
    name = f"taskflow-bench-raw-{uuid.uuid4().hex[:12]}"
    loop = asyncio.get_running_loop()
    acked: list[float] = []
    done = asyncio.Event()

    async def on_message(incoming: AbstractIncomingMessage) -> None:
        await incoming.ack()
        acked.append(loop.time())
        if len(acked) >= count:
            done.set()

    async with connection.channel() as channel:
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(name, durable=True)
        try:
            with ctx.progress.bar(f"{label} baseline publishing", count) as bar:
                await publish(channel, name, count, bar.advance)
            with ctx.progress.bar(f"{label} baseline consuming", count) as bar:
                started_cpu_s = time.process_time()
                tag = await queue.consume(on_message)
                async with asyncio.timeout(60 + count / 200):
                    while not done.is_set():
                        bar.set(len(acked))
                        try:
                            await asyncio.wait_for(done.wait(), 0.2)
                        except TimeoutError:
                            continue
                cpu_s = time.process_time() - started_cpu_s
                await queue.cancel(tag)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    return Consumed(steady_rate(acked, LOW, HIGH), per_unit_us(cpu_s, count))
