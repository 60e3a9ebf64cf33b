"""The product package holds the product: no bench in it, and serving never loads the bench."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec

_LOADED_BY_SERVE = """
import sys
import taskflow.app, taskflow.cli
print(sorted(m for m in sys.modules if m.startswith("taskflow_bench") or m == "honcho"))
"""


def test_taskflow_has_no_bench_package() -> None:
    assert find_spec("taskflow.bench") is None
    assert find_spec("taskflow_bench") is not None  # installed beside it, from bench/


def test_the_serve_path_imports_neither_the_bench_nor_honcho() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_BY_SERVE],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_command_line_has_no_bench_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskflow", "bench"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid choice: 'bench'" in done.stderr
