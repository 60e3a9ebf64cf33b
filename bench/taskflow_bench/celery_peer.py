"""The Celery worker the amqp-e2e scenario measures taskflow against (its own process).

Celery 5 with the RabbitMQ broker, no result backend, one no-op task. The worker is
started by the bench as `celery -A taskflow_bench.celery_peer worker --pool threads -c 2
--without-gossip --without-mingle --without-heartbeat -Q <queue>`; the broker URL, the
queue, the number of tasks to expect and the file for the result come from the environment
(`BENCH_CELERY_*`). When the last expected task has run, the worker writes the wall-clock
times (epoch seconds) of the first task's start and the last task's end to that file.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from celery import Celery

BROKER = "BENCH_CELERY_BROKER"
QUEUE = "BENCH_CELERY_QUEUE"
EXPECTED = "BENCH_CELERY_EXPECTED"
RESULT = "BENCH_CELERY_RESULT"
TASK_NAME = "taskflow_bench.celery_peer.noop"

app = Celery("taskflow_bench_peer", broker=os.environ.get(BROKER, "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    task_default_queue=os.environ.get(QUEUE, "celery"),
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


class _Clock:
    """The start of the first task and the end of the last one, across the pool's threads."""

    def __init__(self, expected: int, result: Path | None) -> None:
        self._lock = threading.Lock()
        self._expected = expected
        self._result = result
        self._done = 0
        self._first: float | None = None

    def started(self) -> None:
        if self._first is None:
            with self._lock:
                if self._first is None:
                    self._first = time.time()

    def ended(self) -> None:
        with self._lock:
            self._done += 1
            if self._done == self._expected and self._result is not None:
                self._result.write_text(f"{self._first} {time.time()} {self._done}\n")


_result = os.environ.get(RESULT)
_CLOCK = _Clock(int(os.environ.get(EXPECTED, "0")), Path(_result) if _result else None)


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Do nothing (and count)."""
    _CLOCK.started()
    _CLOCK.ended()
