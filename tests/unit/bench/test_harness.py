"""The shared harness: the environment it gives a service, and how it reads `/metrics`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import taskflow
from taskflow.config import Settings
from taskflow_bench.harness.environment import port_of, service_environment, variable
from taskflow_bench.harness.metrics import label_values, parse, value
from taskflow_bench.service import ServiceConfig


def test_settings_are_named_once_and_nothing_of_taskflow_is_inherited() -> None:
    inherited = {
        "PATH": "/bin",
        "TASKFLOW_PROCESSORS": "999",
        "DATABASE_URL": "postgresql://elsewhere/x",
        "PORT": "1",
    }
    env = service_environment(
        {"processors": 4, "database_url": "postgresql://db/t", "work_min_s": 0, "work_max_s": 0.5},
        inherit=inherited,
    )
    assert env["PATH"] == "/bin"
    assert "PORT" not in env
    settings = Settings.from_env(env)  # the names are the ones taskflow reads
    assert settings.processors == 4
    assert settings.database_url == "postgresql://db/t"
    assert settings.work_max_s == 0.5
    assert settings.port == port_of(env) > 0
    assert variable("amqp_queue") == "TASKFLOW_AMQP_QUEUE"


def test_metrics_are_read_by_name_and_labels() -> None:
    samples = parse(
        "# TYPE taskflow_tasks_created_total counter\n"
        'taskflow_tasks_created_total{source="http"} 3.0\n'
        'taskflow_tasks_created_total{source="amqp"} 1.0\n'
        "# TYPE taskflow_db_up gauge\n"
        "taskflow_db_up 1.0\n"
    )
    assert value(samples, "taskflow_tasks_created_total", source="http") == 3
    assert value(samples, "taskflow_db_up") == 1
    assert value(samples, "taskflow_nothing") == 0
    assert label_values(samples, "taskflow_tasks_created_total", "source") == {"http", "amqp"}


def test_a_bench_service_runs_the_taskflow_the_bench_imported() -> None:
    # A bench run as `PYTHONPATH=<tree>:<tree>/bench python -m taskflow_bench` compares
    # <tree> with another checkout: its services must import <tree>'s taskflow, not the
    # one installed in the virtualenv (which the clean environment alone would give them).
    env = ServiceConfig("postgresql://db/t", "amqp://mq", "tasks").environment()
    source = Path(taskflow.__file__).resolve().parent.parent
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(source)
    imported = subprocess.run(
        [sys.executable, "-c", "import taskflow; print(taskflow.__file__)"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert Path(imported).resolve() == Path(taskflow.__file__).resolve()
