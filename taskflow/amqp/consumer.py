"""The RabbitMQ consumer: messages on the tasks queue become tasks, acked after commit.

Each message is checked by the rules of `POST /tasks`, handed to the pipeline's intake
and acknowledged only once its task is committed (`AckWindow` batches those acks without
ever acking ahead of a commit). A message that can never become a task is copied to
`<queue>.dead` with the reason and then acked; a message that cannot be stored *now*
(intake full, PostgreSQL down) goes back to the queue after a short pause. Prefetch is
bounded, so a full pipeline stops the broker from sending more.

The consumer connects in the background with aio-pika's robust connection: the service
serves HTTP while RabbitMQ is down, and aio-pika restores the connection, the channel, its
QoS and the queues after an outage. The consumer itself is registered on aiormq's channel
underneath (`basic_consume` with a plain delivery callback) and registered again each
time aio-pika reopens that channel: aio-pika's `Queue.consume` wraps every delivery in an
`IncomingMessage` and a future of its own, which cost about a quarter of the service's
CPU per task (README, "Consuming through aiormq"). `ConsumerState` and
`taskflow_amqp_connected` say where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from functools import partial
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiohttp import web
from aiormq import spec
from aiormq.abc import DeliveredMessage
from yarl import URL

from taskflow.actors.component import PIPELINE
from taskflow.actors.intake import Accepted
from taskflow.actors.pipeline import Pipeline
from taskflow.amqp.acks import AckWindow
from taskflow.amqp.messages import (
    BadMessage,
    dead_letter_copy,
    dead_letter_name,
    naming_encoding,
    task_from_message,
)
from taskflow.amqp.queues import QueueTypeConflict, declare_queue
from taskflow.amqp.state import CONSUMER_STATE, ConsumerPhase, ConsumerState
from taskflow.backoff import Backoff
from taskflow.config import SETTINGS, Settings, mask_url
from taskflow.errors import IdempotencyConflict, TaskflowError
from taskflow.lifecycle import Grace
from taskflow.metrics import METRICS, Metrics

log = structlog.get_logger(__name__)

PREFETCH_MAX = 1000
CONNECT_TIMEOUT_S = 10.0
RECONNECT_INTERVAL_S = 2.0
CONNECT_BACKOFF_MAX_S = 5.0
REQUEUE_DELAY_S = 1.0
BROKER_CALL_TIMEOUT_S = 10.0


def prefetch_for(queue_size: int) -> int:
    """Deliveries in flight to one consumer: half the intake queue (HTTP keeps the rest)."""
    return max(1, min(queue_size // 2, PREFETCH_MAX))


class _ChannelAcks:
    """The ack window of one (underlying) channel, and the channel its acks go on."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.window = AckWindow()
        self.flushing = False


class Consumer:
    """Consumes `settings.amqp_queue` into `pipeline`, reporting itself in `state`.

    It has the lifecycle of every background component (`taskflow.lifecycle`):
    `start()`; `stop_taking_work()` cancels the consumer, so the broker sends nothing
    more; `finish()` waits for the messages in hand, acks what was committed and
    disconnects.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        state: ConsumerState,
        *,
        reconnect_interval: float = RECONNECT_INTERVAL_S,
    ) -> None:
        self._url = settings.amqp_url
        self._queue_name = settings.amqp_queue
        self._dead_name = dead_letter_name(settings.amqp_queue)
        self._queue_type = settings.amqp_queue_type
        self._prefetch = prefetch_for(settings.queue_size)
        self._pipeline = pipeline
        self._metrics = metrics
        # Counted once per message: looked up here, as `labels()` takes a lock and builds
        # a key on every call (2 µs a message).
        self._created = metrics.amqp_messages.labels("created")
        self._duplicate = metrics.amqp_messages.labels("duplicate")
        self._state = state
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        # The AMQP channel the consumer is registered on, and its consumer tag.
        self._consuming: tuple[aiormq.abc.AbstractChannel, str] | None = None
        self._consume_lock = asyncio.Lock()
        self._resuming: asyncio.Task[None] | None = None
        self._acks: _ChannelAcks | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()  # dead letters, requeues, acks
        self._pending: set[asyncio.Future[Accepted]] = set()  # deliveries at the intake
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # -- connecting ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start consuming in a named background task; return at once."""
        self._runner = asyncio.create_task(self._run(), name="amqp-consumer")
        self._runner.add_done_callback(self._runner_ended)

    def _runner_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self._set(ConsumerPhase.STOPPED, repr(error))
        log.critical("AMQP consumer crashed; RabbitMQ intake stopped", exc_info=error)

    async def _run(self) -> None:
        """Connect (retrying until the broker answers) and start consuming, then return.

        From then on aio-pika's robust connection restores everything after an outage.
        """
        backoff = Backoff(0.5, CONNECT_BACKOFF_MAX_S)
        logged = False
        while not self._stopping.is_set():
            try:
                connection = await self._connect()
            except Exception as exc:  # whatever it is, try again later
                error = f"{type(exc).__name__}: {exc}"
                self._set(ConsumerPhase.DISCONNECTED, error)
                if not logged:  # once, not once per attempt
                    log.warning(
                        "waiting for RabbitMQ; HTTP intake works meanwhile",
                        url=mask_url(self._url),
                        error=error,
                    )
                    logged = True
                else:
                    log.debug("RabbitMQ still unreachable", error=error)
                await backoff.sleep()
                continue
            try:
                await self._start(connection)
            except QueueTypeConflict as exc:
                # Retrying cannot help: stop consuming for good and say why, once.
                self._set(ConsumerPhase.STOPPED, exc.message)
                log.error(
                    "amqp.queue_type_conflict",
                    error=exc.message,
                    **exc.details,
                )
                self._connection = None
                await _close(connection)
                return
            except Exception as exc:  # e.g. the connection dropped meanwhile
                self._set(ConsumerPhase.DISCONNECTED, f"{type(exc).__name__}: {exc}")
                log.warning("could not start consuming; retrying", error=str(exc))
                self._connection = None
                await _close(connection)
                await asyncio.sleep(backoff.delay)
                continue
            return

    async def _connect(self) -> AbstractRobustConnection:
        """What `aio_pika.connect_robust` does, keeping hold of the connection so that a
        cancelled or failed first attempt does not leave its reconnection loop running."""
        connection = aio_pika.RobustConnection(
            URL(self._url),
            reconnect_interval=self._reconnect_interval,
            client_properties={"connection_name": f"taskflow {self._pipeline.owner}"},
        )
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            await _close(connection)
            raise
        return connection

    async def _start(self, connection: AbstractRobustConnection) -> None:
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection = connection
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        # Dead letters go out on a channel of their own, with confirms: a channel error
        # there cannot take the deliveries of the consuming channel with it.
        self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_queue(channel, self._dead_name, self._queue_type)
        self._queue = await declare_queue(channel, self._queue_name, self._queue_type)
        self._channel = channel
        channel.reopen_callbacks.add(self._on_channel_reopened)
        await self._consume()
        self._set(ConsumerPhase.CONSUMING)
        log.info(
            "consuming from RabbitMQ",
            queue=self._queue_name,
            dead_letter_queue=self._dead_name,
            queue_type=self._queue_type,
            prefetch=self._prefetch,
            url=mask_url(self._url),
        )

    def _set(self, phase: ConsumerPhase, error: str | None = None) -> None:
        self._state.phase = phase
        if error is not None or phase is ConsumerPhase.CONSUMING:
            self._state.last_error = error
        self._metrics.amqp_connected.set(1 if phase is ConsumerPhase.CONSUMING else 0)

    def _on_connection_lost(self, sender: object, exc: BaseException | None = None) -> None:
        if self._stopping.is_set() or sender is not self._connection:
            return
        error = f"{type(exc).__name__}: {exc}" if exc else "connection closed"
        was_consuming = self._state.phase is ConsumerPhase.CONSUMING
        self._set(ConsumerPhase.DISCONNECTED, error)
        if was_consuming:  # once per outage; every failed reconnect attempt also ends here
            log.warning("RabbitMQ connection lost; reconnecting", error=error)
        else:
            log.debug("RabbitMQ reconnect attempt failed", error=error)

    def _on_reconnected(self, sender: object) -> None:
        # aio-pika has reopened the channels by now: the consumer registers again in the
        # task `_on_channel_reopened` started, which then reports it `consuming`.
        if self._stopping.is_set() or sender is not self._connection:
            return
        log.info("RabbitMQ connection restored", queue=self._queue_name)

    # -- the consumer -------------------------------------------------------------------

    async def _consume(self) -> None:
        """Register the consumer on the AMQP channel under the consuming channel, once.

        Called at start, each time aio-pika has reopened the channel, and after the broker
        cancelled the consumer; a channel it is already registered on is left alone.
        """
        if self._channel is None:
            raise RuntimeError("no consuming channel")
        async with self._consume_lock:
            underlay = await asyncio.wait_for(
                self._channel.get_underlay_channel(), BROKER_CALL_TIMEOUT_S
            )
            if self._consuming is not None and self._consuming[0] is underlay:
                return
            underlay.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
            ok = await underlay.basic_consume(
                self._queue_name, self._on_delivery, no_ack=False, timeout=BROKER_CALL_TIMEOUT_S
            )
            if ok.consumer_tag is None:
                raise RuntimeError("RabbitMQ sent no consumer tag")
            self._consuming = (underlay, ok.consumer_tag)

    def _on_channel_reopened(self, _channel: object) -> None:
        """aio-pika reopened the channel (after an outage or a channel error): consume again.

        Not here but in the resume task, once aio-pika has finished restoring the channel:
        had RabbitMQ refused the consume (closing the channel) while aio-pika was still
        restoring it, aio-pika would not reopen it again.
        """
        if self._stopping.is_set():
            return
        lost, self._consuming = self._consuming, None
        if lost is not None and self._state.phase is ConsumerPhase.CONSUMING:
            # The connection stayed up (a lost one is logged by itself): RabbitMQ closed
            # only this channel, for a reason it sent; its unacked deliveries come back.
            reason = _close_reason(lost[0])
            self._set(ConsumerPhase.DISCONNECTED, f"RabbitMQ closed the channel: {reason}")
            log.warning(
                "RabbitMQ closed the consuming channel; consuming on a new one",
                reason=reason,
                queue=self._queue_name,
            )
        self._resume()

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        """The broker cancelled the consumer (its queue was deleted, say): declare it again."""
        consuming = self._consuming
        if consuming is None or frame.consumer_tag != consuming[1] or self._stopping.is_set():
            return
        self._consuming = None
        self._set(ConsumerPhase.DISCONNECTED, "RabbitMQ cancelled the consumer")
        log.warning("RabbitMQ cancelled the consumer; declaring the queue and consuming again")
        self._resume()

    def _resume(self) -> None:
        """Declare the queue and consume again in a named task, retrying until it works."""
        if self._resuming is None or self._resuming.done():
            self._resuming = asyncio.create_task(self._resume_consuming(), name="amqp-resume")

    async def _resume_consuming(self) -> None:
        backoff = Backoff(0.5, CONNECT_BACKOFF_MAX_S)
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._queue is not None:
                    await asyncio.wait_for(self._queue.declare(), BROKER_CALL_TIMEOUT_S)
                await self._consume()
            except Exception as exc:
                # RabbitMQ refused it (and closed the channel, which aio-pika reopens), or
                # the channel is still being reopened: report it, log it once, retry.
                failures += 1
                self._set(ConsumerPhase.DISCONNECTED, repr(exc))
                (log.warning if failures == 1 else log.debug)(
                    "could not consume again; retrying", error=repr(exc)
                )
                await backoff.sleep()
                continue
            self._set(ConsumerPhase.CONSUMING)
            log.info("consuming from RabbitMQ again", queue=self._queue_name)
            return

    # -- one message --------------------------------------------------------------------

    async def _on_delivery(self, delivered: DeliveredMessage) -> None:
        """Hand one delivery to the intake; its answer settles it (`_settle`).

        aiormq runs this coroutine as the delivery's task; nothing in it waits. Only a
        message that is dead-lettered or given back gets another task (publishing, or
        pausing, takes a while), and only those become aio-pika messages.
        """
        if self._stopping.is_set():
            return  # left unacked: the broker gives it to the next consumer
        channel = delivered.channel
        if channel.is_closed:
            return  # its channel is gone, and with it the delivery: it comes back
        acks = self._acks_for(channel)
        tag = _delivery_tag(delivered)
        try:
            future = self._pipeline.offer(
                task_from_message(delivered.body, delivered.header.properties.message_id)
            )
        except BadMessage as exc:
            error = naming_encoding(exc, delivered.header.properties.content_encoding)
            self._later(self._dead_letter(delivered, acks, tag, error))
        except TaskflowError as exc:  # Overloaded: not its fault
            self._later(self._requeue(delivered, acks, tag, exc.message))
        except Exception as exc:
            self._failed_unexpectedly(delivered, acks, tag, exc)
        else:
            self._pending.add(future)
            future.add_done_callback(partial(self._settle, delivered, acks, tag))

    def _settle(
        self,
        message: DeliveredMessage,
        acks: _ChannelAcks,
        tag: int,
        future: asyncio.Future[Accepted],
    ) -> None:
        """The intake answered: ack (task committed or found), dead-letter or give back."""
        self._pending.discard(future)
        if future.cancelled():
            return  # left unacked: the broker redelivers it
        error = future.exception()
        if error is None:
            accepted = future.result()
            if accepted.created:
                self._created.inc()
            else:
                self._duplicate.inc()
                log.info(
                    "repeated message: its task exists",
                    task_id=str(accepted.task.id),
                    **_about(message, tag),
                )
            self._ack(acks, tag)
        elif isinstance(error, IdempotencyConflict):
            self._later(self._dead_letter(message, acks, tag, BadMessage.from_error(error)))
        elif isinstance(error, TaskflowError):  # Overloaded, StoreUnavailable, StoreError
            self._later(self._requeue(message, acks, tag, error.message))
        else:
            self._failed_unexpectedly(message, acks, tag, error)

    def _failed_unexpectedly(
        self, message: DeliveredMessage, acks: _ChannelAcks, tag: int, exc: BaseException
    ) -> None:
        # A bug, not the message's fault; park it instead of looping on it.
        log.error("message handling failed unexpectedly", exc_info=exc, **_about(message, tag))
        error = BadMessage("internal_error", f"{type(exc).__name__}: {exc}")
        self._later(self._dead_letter(message, acks, tag, error))

    def _later(self, settling: Coroutine[Any, Any, None]) -> None:
        """Run `settling` (a dead letter or a requeue) as a task that `finish()` waits for."""
        task = asyncio.create_task(settling, name="amqp-settle-message")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _acks_for(self, channel: aiormq.abc.AbstractChannel) -> _ChannelAcks:
        if self._acks is None or self._acks.channel is not channel:
            self._acks = _ChannelAcks(channel)
        return self._acks

    async def _dead_letter(
        self, message: DeliveredMessage, acks: _ChannelAcks, tag: int, error: BadMessage
    ) -> None:
        log.warning(
            "message dead-lettered",
            reason=error.code,
            error=error.message,
            details=error.details,
            dead_letter_queue=self._dead_name,
            **_about(message, tag),
        )
        try:
            if self._publisher is None:
                raise RuntimeError("no publishing channel")
            await self._publisher.default_exchange.publish(
                dead_letter_copy(_incoming(message), error),
                routing_key=self._dead_name,
                mandatory=True,
                timeout=BROKER_CALL_TIMEOUT_S,
            )
        except Exception as exc:  # the copy is not safe: keep the original
            await self._requeue(message, acks, tag, f"dead-lettering failed: {exc}")
            return
        self._metrics.amqp_dead_lettered.labels(error.code).inc()
        self._metrics.amqp_messages.labels("dead_lettered").inc()
        self._ack(acks, tag)

    async def _requeue(
        self, message: DeliveredMessage, acks: _ChannelAcks, tag: int, why: str
    ) -> None:
        """Give the message back after a pause, so a full or broken pipeline is not spun on."""
        log.debug("message requeued", error=why, delay_s=REQUEUE_DELAY_S, **_about(message, tag))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), REQUEUE_DELAY_S)
        try:
            await acks.channel.basic_nack(tag, requeue=True)
        except CONNECTION_EXCEPTIONS:
            return  # the channel is gone: the broker requeues it anyway
        acks.window.settled(tag)
        self._metrics.amqp_messages.labels("requeued").inc()

    def _ack(self, acks: _ChannelAcks, tag: int) -> None:
        """Mark `tag` done; the first one of a loop turn starts the acks of all then ready.

        The answers of one committed batch all arrive in the same turn of the loop, so
        the task started here (it runs at the next turn) acks the whole batch at once."""
        acks.window.ready(tag)
        if acks.flushing:
            return
        acks.flushing = True
        self._later(self._flush_ready(acks))

    async def _flush_ready(self, acks: _ChannelAcks) -> None:
        try:
            await self._flush(acks)
        finally:
            acks.flushing = False

    @staticmethod
    async def _flush(acks: _ChannelAcks) -> None:
        try:
            while plan := acks.window.take():
                if plan.up_to is not None:
                    await acks.channel.basic_ack(plan.up_to, multiple=True)
                for single in plan.singles:
                    await acks.channel.basic_ack(single)
        except CONNECTION_EXCEPTIONS as exc:
            log.debug("acks not sent: the channel is gone, the broker redelivers", error=str(exc))
        except Exception as exc:  # aiormq raises a bare Exception when the connection drops
            log.debug(
                "acks not sent: the channel failed, the broker redelivers",
                error=repr(exc),
            )

    # -- stopping -----------------------------------------------------------------------

    async def stop_taking_work(self, grace: Grace) -> None:
        """Stop connecting and cancel the consumer: the broker sends nothing more."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._on_channel_reopened)
        background = [t for t in (self._runner, self._resuming) if t is not None]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._consuming is not None:
            underlay, tag = self._consuming
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    underlay.basic_cancel(tag), min(grace.flush_s, BROKER_CALL_TIMEOUT_S)
                )

    async def finish(self, grace: Grace) -> None:
        """Ack what was committed (waiting up to `grace.flush_s`) and disconnect.

        Messages whose task is not committed by then stay unacked and return to the queue.
        """
        await self.stop_taking_work(grace)
        deadline = asyncio.get_running_loop().time() + grace.flush_s
        pending: set[asyncio.Future[Any]] = set(self._pending)
        if pending:  # their answers start settling tasks, waited for next
            _, late = await asyncio.wait(pending, timeout=grace.flush_s)
            if late:
                log.warning("messages left unacked at shutdown; they return to the queue")
        in_flight = set(self._in_flight)
        if in_flight:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            _, late_tasks = await asyncio.wait(in_flight, timeout=max(left, 0.1))
            for task in late_tasks:
                task.cancel()
            await asyncio.gather(*late_tasks, return_exceptions=True)
            if late_tasks:
                log.warning("messages left unacked at shutdown; they return to the queue")
        if self._acks is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush(self._acks), BROKER_CALL_TIMEOUT_S)
        if self._connection is not None:
            await _close(self._connection)
        self._set(ConsumerPhase.STOPPED)


def _close_reason(channel: aiormq.abc.AbstractChannel) -> str:
    """Why `channel` was closed, as RabbitMQ said it (or "unknown")."""
    if not channel.is_closed:
        return "unknown"
    closing = channel.closing  # done: the future itself, no observer
    error = None if closing.cancelled() else closing.exception()
    return "unknown" if error is None else str(error)


def _delivery_tag(delivered: DeliveredMessage) -> int:
    delivery = delivered.delivery
    return (delivery.delivery_tag or 0) if isinstance(delivery, spec.Basic.Deliver) else 0


def _incoming(delivered: DeliveredMessage) -> AbstractIncomingMessage:
    """The delivery as aio-pika's message (its properties decoded), for a dead letter."""
    return aio_pika.IncomingMessage(delivered, no_ack=False)


def _about(message: DeliveredMessage, tag: int) -> dict[str, Any]:
    """The fields of a log event about one message."""
    delivery = message.delivery
    return {
        "source": "amqp",
        "message_id": message.header.properties.message_id,
        "delivery_tag": tag,
        "redelivered": isinstance(delivery, spec.Basic.Deliver) and bool(delivery.redelivered),
    }


async def _close(connection: AbstractRobustConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), BROKER_CALL_TIMEOUT_S)


def setup(app: web.Application) -> None:
    """Consume RabbitMQ into the pipeline while `app` runs (its state under `CONSUMER_STATE`).

    Its `cleanup_ctx` must come after the pipeline's, so that on shutdown the consumer
    stops before the pipeline drains. Start-up does not wait for RabbitMQ: the consumer
    connects in a named background task.
    """
    app.cleanup_ctx.append(_consumer_ctx)


async def _consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    state = ConsumerState(phase=ConsumerPhase.CONNECTING, queue=settings.amqp_queue)
    app[CONSUMER_STATE] = state
    metrics.amqp_connected.set(0)
    consumer = Consumer(settings, app[PIPELINE], metrics, state)
    consumer.start()
    try:
        yield
    finally:
        grace = Grace.starting_now(settings.shutdown_grace_s)
        await consumer.stop_taking_work(grace)
        await consumer.finish(grace)
        log.info("AMQP consumer stopped", queue=settings.amqp_queue)
