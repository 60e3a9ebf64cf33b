"""The bench's statistics: medians of repetitions, percentiles, steady rates."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from taskflow_bench.stats import (
    histogram,
    merge,
    per_unit_us,
    percentile,
    quantile_index,
    rate,
    ratio,
    steady_rate,
    summarize,
    summarize_runs,
)


def test_summary_is_the_median_with_its_range() -> None:
    s = summarize([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.runs) == (2.0, 1.0, 3.0, 3)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert summarize([1.0, 2.0, 3.0, 10.0]).median == 2.5


def test_missing_values_are_left_out_of_a_summary() -> None:
    s = summarize([math.nan, 4.0])
    assert (s.median, s.runs) == (4.0, 1)
    assert math.isnan(summarize([math.nan]).median)
    assert summarize([]).runs == 0


def test_runs_are_summarized_per_metric_in_first_seen_order() -> None:
    runs = [{"rate": 10.0, "p99": 5.0}, {"rate": 30.0, "p99": 7.0, "extra": 1.0}]
    summary = summarize_runs(runs)
    assert list(summary) == ["rate", "p99", "extra"]
    assert summary["rate"].median == 20.0
    assert summary["extra"].runs == 1


def test_nearest_rank_percentiles_of_a_histogram() -> None:
    hist = Counter({1000: 98, 5000: 1, 90000: 1})
    assert percentile(hist, 50) == 1000
    assert percentile(hist, 98) == 1000
    assert percentile(hist, 99) == 5000
    assert percentile(hist, 100) == 90000


def test_percentile_of_nothing_is_nan_and_out_of_range_is_an_error() -> None:
    assert math.isnan(percentile({}, 99))
    with pytest.raises(ValueError, match="not in"):
        percentile({1: 1}, 0)


def test_latencies_become_a_microsecond_histogram_and_merge() -> None:
    a = histogram([0.001, 0.001, 0.0025])
    assert a == Counter({1000: 2, 2500: 1})
    assert merge([a, Counter({1000: 1})]) == Counter({1000: 3, 2500: 1})


def test_rate_and_ratio_are_nan_rather_than_infinite() -> None:
    assert rate(10, 2) == 5
    assert math.isnan(rate(10, 0))
    assert ratio(3, 4) == 0.75
    assert math.isnan(ratio(3, 0))
    assert math.isnan(ratio(3, math.nan))


def test_cpu_per_unit_is_in_microseconds_and_nan_for_no_units() -> None:
    assert per_unit_us(0.5, 1000) == pytest.approx(500.0)
    assert math.isnan(per_unit_us(0.5, 0))
    assert math.isnan(per_unit_us(math.nan, 10))  # a process the bench did not start


def test_quantile_index_matches_percentile_disc() -> None:
    # percentile_disc(0.1) over 100 rows is the 10th row (index 9); 0.9 the 90th.
    assert quantile_index(100, 0.1) == 9
    assert quantile_index(100, 0.9) == 89
    assert quantile_index(5, 0.0) == 0


def test_steady_rate_leaves_out_start_up_and_tail() -> None:
    # A slow start (1 s for the first event), then one event every 10 ms, then a slow tail.
    times = [0.0] + [1.0 + i * 0.01 for i in range(98)] + [5.0]
    assert steady_rate(times) == pytest.approx(100, rel=1e-6)
    assert math.isnan(steady_rate([1.0]))
