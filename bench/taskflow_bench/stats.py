"""The statistics of the bench: medians of repetitions, latency percentiles, rates."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """One metric over the repetitions: the median (the reported statistic) and the range."""

    median: float
    low: float
    high: float
    runs: int

    def to_json(self) -> dict[str, float | int]:
        """The summary as a JSON object."""
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.runs}


def summarize(values: Sequence[float]) -> Summary:
    """The median and range of `values` (one per repetition); NaNs are left out."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return Summary(math.nan, math.nan, math.nan, 0)
    return Summary(statistics.median(kept), min(kept), max(kept), len(kept))


def summarize_runs(runs: Sequence[Mapping[str, float]]) -> dict[str, Summary]:
    """Summaries per metric of a list of repetitions, each a {metric: value} mapping."""
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run if name not in names)
    return {name: summarize([run.get(name, math.nan) for run in runs]) for name in names}


def rate(count: float, seconds: float) -> float:
    """`count` per second, NaN when no time passed."""
    return count / seconds if seconds > 0 else math.nan


def per_unit_us(cpu_s: float, units: int) -> float:
    """`cpu_s` seconds of CPU time per unit, in microseconds; NaN for no units."""
    return cpu_s * 1e6 / units if units > 0 else math.nan


def ratio(value: float, baseline: float) -> float:
    """`value / baseline`, NaN when the baseline is missing or zero."""
    return value / baseline if baseline and not math.isnan(baseline) else math.nan


def histogram(latencies_s: Iterable[float]) -> Counter[int]:
    """Latencies in seconds as a histogram of whole microseconds (the form wrk reports)."""
    return Counter(round(latency * 1_000_000) for latency in latencies_s)


def merge(histograms: Iterable[Mapping[int, int]]) -> Counter[int]:
    """One histogram from several (one per load generator)."""
    total: Counter[int] = Counter()
    for h in histograms:
        total.update(h)
    return total


def percentile(hist: Mapping[int, int], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q ≤ 100) of a {value: count} histogram.

    NaN for an empty histogram.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    total = sum(hist.values())
    if total == 0:
        return math.nan
    rank = math.ceil(q / 100 * total)
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    raise AssertionError("unreachable: rank is at most the total")  # pragma: no cover


def quantile_index(count: int, q: float) -> int:
    """The 0-based index `percentile_disc(q)` picks among `count` sorted values."""
    return max(math.ceil(q * count) - 1, 0)


def steady_rate(times: Sequence[float], low: float = 0.1, high: float = 0.9) -> float:
    """Events per second between the `low` and `high` quantiles of their times.

    It leaves out the start-up and the tail of a run (`percentile_disc` semantics, so a
    window read from PostgreSQL gives the same number).
    """
    ordered = sorted(times)
    if len(ordered) < 2:
        return math.nan
    first, last = quantile_index(len(ordered), low), quantile_index(len(ordered), high)
    return rate(last - first, ordered[last] - ordered[first])
