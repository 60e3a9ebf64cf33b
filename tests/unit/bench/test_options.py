"""`taskflow-bench` arguments, as the command line parses them."""

from __future__ import annotations

import pytest

from taskflow.config import Settings
from taskflow_bench import runner
from taskflow_bench.cli import parser
from taskflow_bench.options import DEFAULT_SCENARIOS, SCENARIOS, BenchOptions, from_args


def _options(*argv: str) -> BenchOptions:
    return from_args(parser().parse_args(list(argv)), "amqp://from-settings/")


def test_defaults_run_every_scenario_three_times() -> None:
    o = _options()
    assert o.scenarios == DEFAULT_SCENARIOS
    assert o.repetitions == 3
    assert o.connections == 64
    assert o.capacity_processors == 2000
    assert o.drain_processors == 2000
    assert o.processors == Settings().processors  # what the product ships with
    assert (o.backlog_small, o.backlog_large) == (1000, 100_000)
    assert o.amqp_url == "amqp://from-settings/"
    assert o.url is None
    assert o.log_level == "warning"
    assert not o.json


def test_every_scenario_named_on_the_command_line_has_a_runner() -> None:
    assert set(runner.SCENARIOS) == set(SCENARIOS)
    description = parser().description or ""
    assert all(name in description for name in SCENARIOS)


def test_capacity_amqp_runs_by_default_with_the_capacity_sizes() -> None:
    assert "capacity-amqp" in DEFAULT_SCENARIOS
    o = _options("capacity-amqp", "--capacity-processors", "50", "--capacity-seconds", "2")
    assert o.scenarios == ("capacity-amqp",)
    assert (o.capacity_processors, o.capacity_seconds) == (50, 2.0)


def test_scenarios_are_a_comma_separated_list_without_repeats() -> None:
    assert _options("drain,http,drain").scenarios == ("drain", "http")


def test_options_are_read() -> None:
    o = _options(
        "http", "-r", "5", "-c", "8", "-d", "2.5", "--json", "--instances", "2",
        "--client", "aiohttp", "--url", "http://127.0.0.1:9/", "--amqp-url", "amqp://x/",
        "--no-progress", "--log-level", "info",
    )  # fmt: skip
    assert (o.repetitions, o.connections, o.duration_s, o.instances) == (5, 8, 2.5, 2)
    assert o.log_level == "info"
    assert (o.client, o.url, o.amqp_url, o.json, o.progress) == (
        "aiohttp",
        "http://127.0.0.1:9/",
        "amqp://x/",
        True,
        False,
    )


@pytest.mark.parametrize(
    "argv",
    [["nosuch"], ["http,nosuch"], ["-r", "0"], ["-c", "-1"], ["-d", "0"], ["--client", "ab"]],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _options(*argv)
    assert exc.value.code == 2
    assert "taskflow-bench" in capsys.readouterr().err
