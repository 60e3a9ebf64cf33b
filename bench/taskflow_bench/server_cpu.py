"""The CPU time of the PostgreSQL server, when it runs on this machine.

The rate of a scenario moves with whatever else the machine does; the CPU time each task
costs moves much less. The server's share is spread over many processes: the postmaster,
its backends (the service's pool, the bench's own connection), autovacuum, the WAL and
background writers, and backends that have already exited, whose time the kernel adds to
the postmaster's once it has reaped them. `seconds()` is the sum of all of these, so the
difference between two readings is what the server spent in between, whichever process
spent it (other databases of the same server included: the bench runs alone).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from taskflow_bench.harness.service import CLOCK_TICKS, proc_stat


class ServerCpu:
    """A meter of the CPU time of one PostgreSQL server's processes."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    @classmethod
    def of_backend(cls, backend_pid: int) -> ServerCpu | None:
        """The meter of the server that runs backend `backend_pid` (`pg_backend_pid()`),
        None when that server is not on this machine (or in another PID namespace)."""
        try:
            if Path(f"/proc/{backend_pid}/comm").read_text().strip() != "postgres":
                return None
            return cls(int(proc_stat(backend_pid)[1]))
        except (OSError, ValueError, IndexError):
            return None

    def seconds(self) -> float:
        """CPU seconds (user + system) the server has used so far, exited backends included."""
        fields = proc_stat(self.postmaster)
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        parent = str(self.postmaster)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                child = proc_stat(entry.name)
            except OSError:  # exited since the listing: now in the postmaster's cutime
                continue
            if child[1] == parent:
                ticks += int(child[11]) + int(child[12])
        return ticks / CLOCK_TICKS


def seconds_of(meter: ServerCpu | None) -> float:
    """`meter.seconds()`, or NaN without a meter (a server on another machine)."""
    return meter.seconds() if meter is not None else math.nan
