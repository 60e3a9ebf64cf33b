"""Prometheus metrics, one registry per application instance.

Names follow Prometheus conventions: `taskflow_` prefix, base units, `_total` counters.
The README's Operations section documents each one.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# `_created` series double the output and nobody here queries them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_CANCEL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60)
_WORK_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120)


class Metrics:
    """All metrics of one taskflow instance, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The process's CPU, memory and file descriptors (process_*) and python_info.
        r.register(PROCESS_COLLECTOR)
        r.register(PLATFORM_COLLECTOR)
        self.tasks_created = Counter(
            "taskflow_tasks_created_total", "Tasks created, by source.", ["source"], registry=r
        )
        self.status_changes = Counter(
            "taskflow_status_changes_total",
            "Committed status changes written by this instance, by new status.",
            ["status"],
            registry=r,
        )
        self.tasks = Gauge(
            "taskflow_tasks",
            "Tasks in PostgreSQL in each status, all instances together (refreshed every 5 s).",
            ["status"],
            registry=r,
        )
        self.oldest_new_age = Gauge(
            "taskflow_oldest_new_task_age_seconds",
            "Age of the oldest task still `new`, all instances together (0 when there is none; "
            "refreshed every 5 s).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "taskflow_queue_depth",
            "Items waiting in an in-process queue (intake, dispatch, processors, status_writer).",
            ["queue"],
            registry=r,
        )
        self.queue_capacity = Gauge(
            "taskflow_queue_capacity", "Bound of an in-process queue.", ["queue"], registry=r
        )
        self.processors_busy = Gauge(
            "taskflow_processors_busy", "Processors working on an attempt.", registry=r
        )
        self.processing_seconds = Histogram(
            "taskflow_processing_seconds",
            "Time from a processor taking an attempt to its committed outcome, by outcome "
            "(fenced-off attempts are not observed).",
            ["status"],
            buckets=_WORK_BUCKETS,
            registry=r,
        )
        self.db_batch_size = Histogram(
            "taskflow_db_batch_size",
            "Rows per batched PostgreSQL statement, by operation (insert, claim, claim_new, "
            "finish; claims that found nothing are not observed).",
            ["operation"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.db_batch_seconds = Histogram(
            "taskflow_db_batch_seconds",
            "Latency of batched PostgreSQL statements, by operation.",
            ["operation"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.db_up = Gauge(
            "taskflow_db_up",
            "1 when the last PostgreSQL call of the pipeline reached the server, 0 when it "
            "could not (checked at least every few seconds).",
            registry=r,
        )
        self.http_seconds = Histogram(
            "taskflow_http_request_duration_seconds",
            "HTTP request latency, by route, method and status code.",
            ["route", "method", "code"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.intake_rejected = Counter(
            "taskflow_intake_rejected_total",
            "Creates (HTTP or AMQP) refused as overloaded, by reason: the intake queue was "
            "full, the instance was stopping, or the commit did not happen in time.",
            ["reason"],
            registry=r,
        )
        self.amqp_messages = Counter(
            "taskflow_amqp_messages_total",
            "AMQP messages handled, by outcome (created, duplicate, dead_lettered, requeued).",
            ["outcome"],
            registry=r,
        )
        self.amqp_dead_lettered = Counter(
            "taskflow_amqp_dead_lettered_total",
            "AMQP messages sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.amqp_connected = Gauge(
            "taskflow_amqp_connected", "1 while the AMQP consumer is connected, else 0.", registry=r
        )
        self.lease_recoveries = Counter(
            "taskflow_lease_recoveries_total",
            "Attempts started on tasks whose previous lease had expired.",
            registry=r,
        )
        self.fenced_writes = Counter(
            "taskflow_fenced_writes_total",
            "Outcomes rejected because their attempt no longer held the lease.",
            registry=r,
        )
        self.status_write_retries = Counter(
            "taskflow_status_write_retries_total",
            "Retries of a status write batch after a PostgreSQL error.",
            registry=r,
        )
        self.lost_leases = Counter(
            "taskflow_lost_leases_total",
            "Leases found taken over by another attempt when renewing.",
            registry=r,
        )
        self.pruned_tasks = Counter(
            "taskflow_pruned_tasks_total",
            "Terminal tasks deleted by retention (TASKFLOW_RETENTION) by this instance.",
            registry=r,
        )
        self.cancels = Counter(
            "taskflow_cancels_total",
            "Cancels, by outcome: `cancelled` (a `new` task, by this instance's API), "
            "`cancel_requested` (a running attempt asked to stop, by this instance's API), "
            "`too_late` (the attempt this instance ran had finished its work first: its "
            "outcome stands).",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "taskflow_retries_total",
            "Tasks sent back to `new` by a retry through this instance's API.",
            registry=r,
        )
        self.cancel_latency = Histogram(
            "taskflow_cancel_latency_seconds",
            "From a cancel request of a running attempt to its `cancelled` outcome being "
            "committed, observed by the instance that ran the attempt.",
            buckets=_CANCEL_BUCKETS,
            registry=r,
        )
        self.streams_open = Gauge(
            "taskflow_event_streams_open",
            "Server-Sent Events streams open on this instance, by stream (task, global).",
            ["stream"],
            registry=r,
        )
        self.stream_events_sent = Counter(
            "taskflow_event_stream_events_sent_total",
            "Events written to Server-Sent Events streams, by stream (task, global).",
            ["stream"],
            registry=r,
        )
        self.stream_subscribers_dropped = Counter(
            "taskflow_event_stream_subscribers_dropped_total",
            "Streams ended because their client did not keep up (it resumes with Last-Event-ID).",
            registry=r,
        )
        self.event_bus_restarts = Counter(
            "taskflow_event_bus_restarts_total",
            "Times the event bus's reader hit a bug and started again (its streams ended; "
            "their clients resume with Last-Event-ID).",
            registry=r,
        )
        self.notification_queue_usage = Gauge(
            "taskflow_notification_queue_usage",
            "pg_notification_queue_usage() as the event listener last read it (0..1; at 1 "
            "NOTIFY, and so every commit that changes a status, fails).",
            registry=r,
        )
        self.listener_reconnects = Gauge(
            "taskflow_event_listener_reconnects",
            "How many times the LISTEN connection of this instance was re-established.",
            registry=r,
        )
        self._http_children: dict[tuple[str, str, int], Histogram] = {}

    def http_latency(self, route: str, method: str, code: int) -> Histogram:
        """The latency histogram of one route, method and status code.

        Children are cached: `labels()` takes a lock and builds a key on every call,
        which shows in profiles at thousands of requests per second.
        """
        key = (route, method, code)
        child = self._http_children.get(key)
        if child is None:
            child = self.http_seconds.labels(route, method, str(code))
            self._http_children[key] = child
        return child

    def track_queue(self, name: str, depth: Callable[[], float], capacity: int) -> None:
        """Expose the depth and bound of an in-process queue, read at scrape time."""
        self.queue_depth.labels(name).set_function(depth)
        self.queue_capacity.labels(name).set(capacity)


METRICS = web.AppKey("metrics", Metrics)


def setup(app: web.Application) -> Metrics:
    """Give `app` its own `Metrics` (under `METRICS`); routes and components read it there."""
    metrics = app[METRICS] = Metrics()
    return metrics
