"""The `taskflow-bench` command (also `python -m taskflow_bench`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from taskflow.config import Settings
from taskflow.errors import ConfigError
from taskflow_bench.options import SCENARIOS, add_arguments, from_args


def parser() -> argparse.ArgumentParser:
    """The command line of `taskflow-bench`."""
    bench = argparse.ArgumentParser(
        prog="taskflow-bench",
        description="Start a taskflow service, drive it, and print rates against baselines. "
        f"Scenarios: {', '.join(SCENARIOS)} (see the README's Performance section). "
        "Progress on stderr, the table (or --json) on stdout.",
    )
    add_arguments(bench)
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"taskflow-bench: configuration error: {exc}", file=sys.stderr)
        return 2
    from taskflow_bench.runner import main as run  # noqa: PLC0415 - parse errors stay fast

    return run(from_args(args, settings.amqp_url))
