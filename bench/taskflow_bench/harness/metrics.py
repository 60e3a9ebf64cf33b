"""Reading `/metrics` the way Prometheus does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from taskflow_bench.harness.tasks import Http

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


async def scrape(http: Http) -> Samples:
    """Every sample of `/metrics` (which must answer 200 in Prometheus' text format)."""
    async with http.get("/metrics") as response:
        assert response.status == 200, response.status
        assert response.content_type == "text/plain", response.content_type
        return parse(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    """Every value `label` takes in the series of `name`."""
    return {dict(key)[label] for key_name, key in samples if key_name == name and key}


async def metric(http: Http, name: str, **labels: str) -> float:
    """The value of one sample of `/metrics` (0 when it is absent)."""
    return value(await scrape(http), name, **labels)


async def wait_for(http: Http, check: Callable[[Samples], bool], timeout: float) -> Samples:
    """Scrape (at most `timeout`) until `check` holds; the samples that passed."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(http)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)
