"""Results of a bench run: per-scenario repetitions, their medians, targets, table and JSON."""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from taskflow_bench.stats import Summary, summarize_runs


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """How a metric is named and printed: `key` in the runs, `label` and `unit` in the table."""

    key: str
    label: str
    unit: str = ""
    digits: int = 0


_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Target:
    """A goal of the issue for one metric, compared with its median: `metric op value`."""

    metric: str
    op: str
    value: float

    def met(self, summary: Summary | None) -> bool | None:
        """True or False against the median; None when the metric was not measured."""
        if summary is None or math.isnan(summary.median):
            return None
        compare: Callable[[float, float], bool] = _OPS[self.op]
        return compare(summary.median, self.value)

    def describe(self) -> str:
        """The target as printed, e.g. `>= 0.7`."""
        digits = 0 if self.value == int(self.value) else 2
        return f"{self.op} {_number(self.value, digits)}"


class Outcome(enum.StrEnum):
    """How a scenario ended."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(slots=True)
class ScenarioResult:
    """One scenario: its parameters, one {metric: value} mapping per repetition, targets."""

    name: str
    params: dict[str, Any]
    metrics: Sequence[MetricSpec]
    targets: Sequence[Target] = ()
    runs: list[dict[str, float]] = field(default_factory=list)
    outcome: Outcome = Outcome.OK
    note: str | None = None

    def summary(self) -> dict[str, Summary]:
        """Median and range of each metric over the repetitions."""
        return summarize_runs(self.runs)

    def to_json(self) -> dict[str, Any]:
        """The scenario as a JSON object."""
        summary = self.summary()
        return {
            "scenario": self.name,
            "outcome": self.outcome.value,
            "note": self.note,
            "params": self.params,
            "runs": self.runs,
            "summary": {key: s.to_json() for key, s in summary.items()},
            "units": {m.key: m.unit for m in self.metrics},
            "targets": [
                {
                    "metric": t.metric,
                    "op": t.op,
                    "value": t.value,
                    "met": t.met(summary.get(t.metric)),
                }
                for t in self.targets
            ],
        }


@dataclass(slots=True)
class Report:
    """Everything a run of `taskflow-bench` found, and where it ran."""

    environment: dict[str, Any]
    repetitions: int
    scenarios: list[ScenarioResult] = field(default_factory=list)

    @property
    def statistic(self) -> str:
        """What the table shows, in words."""
        return f"median of {self.repetitions} repetitions (min..max beside it)"

    def to_json(self) -> bytes:
        """The report as JSON (NaN becomes null)."""
        body = {
            "statistic": self.statistic,
            "repetitions": self.repetitions,
            "environment": self.environment,
            "scenarios": [s.to_json() for s in self.scenarios],
        }
        return orjson.dumps(_nan_to_none(body), option=orjson.OPT_INDENT_2)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _number(value: float, digits: int) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def render_table(report: Report) -> str:
    """The report as a plain-text table, one row per scenario metric."""
    header = ("scenario", "metric", "median", "min..max", "target", "met")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for scenario in report.scenarios:
        summary = scenario.summary()
        targets = {t.metric: t for t in scenario.targets}
        notes.append(f"  {scenario.name}: {_params(scenario.params)}")
        if scenario.note:
            notes.append(f"  {scenario.name}: {scenario.note}")
        if scenario.outcome is not Outcome.OK:
            rows.append((scenario.name, f"({scenario.outcome.value})", "", "", "", ""))
            continue
        for spec in scenario.metrics:
            s = summary.get(spec.key)
            if s is None:
                continue
            label = f"{spec.label} ({spec.unit})" if spec.unit else spec.label
            target = targets.get(spec.key)
            met = target.met(s) if target else None
            rows.append(
                (
                    scenario.name,
                    label,
                    _number(s.median, spec.digits),
                    f"{_number(s.low, spec.digits)}..{_number(s.high, spec.digits)}",
                    target.describe() if target else "",
                    {True: "yes", False: "NO", None: ""}[met],
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3}

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    out.append("")
    out.append(f"Statistic: {report.statistic}.")
    env = report.environment
    out.append(
        "Machine: "
        + ", ".join(
            f"{k} {v}"
            for k, v in env.items()
            if k in ("cpus", "load_before", "client", "service_log_level", "python_executable")
        )
    )
    out.append("Parameters and notes:")
    out.extend(notes)
    return "\n".join(out)
