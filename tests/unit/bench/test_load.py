"""The HTTP load generators: wrk's output, spreading connections, the aiohttp client."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from aiohttp.test_utils import TestServer

from taskflow_bench.baseline import make_app
from taskflow_bench.load import (
    MARKER,
    LoadResult,
    choose_client,
    parse_wrk_output,
    run_load,
    split_connections,
    wrk_script,
)


def test_wrk_result_line_is_parsed() -> None:
    line = (
        MARKER
        + orjson.dumps(
            {
                "requests": 300,
                "duration_us": 2_000_000,
                "unexpected": 3,
                "errors": 1,
                "hist": {"1000": 296, "30000": 4},
            }
        ).decode()
    )
    result = parse_wrk_output(f"Running 2s test\n{line}\nRequests/sec: 150\n")
    assert (result.requests, result.seconds, result.unexpected, result.errors) == (300, 2.0, 3, 1)
    assert result.rate == 150
    assert result.latency_ms(50) == 1.0
    assert result.latency_ms(99) == 30.0


def test_wrk_output_without_result_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="Connection refused"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_posts_the_body_and_counts_other_statuses() -> None:
    script = wrk_script(b'{"title":"x"}', 201)
    assert 'wrk.method = "POST"' in script
    assert '[[{"title":"x"}]]' in script
    assert "status ~= 201" in script
    assert MARKER in script


def test_connections_are_spread_evenly_and_never_zero() -> None:
    assert split_connections(64, 1) == [64]
    assert split_connections(64, 3) == [22, 21, 21]
    assert split_connections(1, 2) == [1, 1]


def test_parts_combine_into_one_result() -> None:
    a = LoadResult(100, 2.0, 1, 0, Counter({1000: 100}))
    b = LoadResult(50, 2.1, 0, 2, Counter({3000: 50}))
    both = LoadResult.combine([a, b])
    assert (both.requests, both.seconds, both.unexpected, both.errors) == (150, 2.1, 1, 2)
    assert both.latency_us == Counter({1000: 100, 3000: 50})


def test_auto_client_is_a_known_one() -> None:
    assert choose_client("aiohttp") == "aiohttp"
    assert choose_client("auto") in ("wrk", "aiohttp")


async def test_aiohttp_client_counts_responses_and_other_statuses() -> None:
    async with TestServer(make_app()) as server:
        url = str(server.make_url("")).rstrip("/")
        ok = await run_load("aiohttp", [url], connections=2, duration_s=0.3)
        other = await run_load("aiohttp", [url], connections=2, duration_s=0.3, expected=200)
    assert ok.requests > 0
    assert ok.unexpected == 0
    assert ok.errors == 0
    assert sum(ok.latency_us.values()) == ok.requests
    assert other.requests > 0
    assert other.unexpected == other.requests
