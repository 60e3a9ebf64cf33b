"""Running `taskflow serve` with an embedded PostgreSQL: environments and data directories."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator

import psutil  # type: ignore[import-untyped]

from taskflow_bench.harness.environment import free_port, service_environment

TASKFLOW = pathlib.Path(sys.executable).with_name("taskflow")  # the console script
SERVE = (str(TASKFLOW), "serve")


def service_env(data_dir: pathlib.Path, **overrides: str) -> dict[str, str]:
    """The environment for one instance: fast work, JSON logs, no DATABASE_URL, no broker.

    Nothing taskflow reads is inherited from the test's own environment. The AMQP URL points
    at a local port where nothing listens, so the instance serves HTTP alone.
    """
    settings = {
        "data_dir": str(data_dir),
        "amqp_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "amqp_queue": f"tasks-test-{uuid.uuid4().hex[:12]}",
        "work_min_s": "0",
        "work_max_s": "0",
        "failure_rate": "0",
        "processors": "10",
        "shutdown_grace_s": "5",
        "log_format": "json",
    }
    return service_environment({**settings, **overrides})


def postgres_processes(data_dir: pathlib.Path) -> list[psutil.Process]:
    """The PostgreSQL server processes running on data_dir."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def stop_leftover_servers(data_dir: pathlib.Path) -> None:
    """Stop a server that a failed test left running on data_dir (SIGTERM: smart shutdown)."""
    leftovers = postgres_processes(data_dir)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    psutil.wait_procs(leftovers, timeout=30)


@contextlib.contextmanager
def private_data_dir() -> Iterator[pathlib.Path]:
    """A path for a data directory (not created) in a folder of its own under the system temp.

    Not under pytest's tmp_path: run as root, the package makes the data directory's parents
    traversable for its server user, and every pytest session run as root resets
    /tmp/pytest-of-root to 0700, so a concurrent one cuts that user off in mid-start.
    Whatever server is left running on the directory is stopped, and the folder removed.
    """
    folder = pathlib.Path(tempfile.mkdtemp(prefix="taskflow-embedded-"))
    try:
        yield folder / "pg"
    finally:
        stop_leftover_servers(folder / "pg")
        shutil.rmtree(folder, ignore_errors=True)
