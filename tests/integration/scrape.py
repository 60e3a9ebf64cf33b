"""Reading `/metrics` the way Prometheus does, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Client) -> Samples:
    """Every sample of `/metrics`, by name and label set."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    """Every value `label` takes in the series of `name`."""
    return {dict(key)[label] for key_name, key in samples if key_name == name and key}


async def wait_for(client: Client, check: Callable[[Samples], bool], timeout: float) -> Samples:
    """Scrape until `check` holds (the per-status gauges are refreshed periodically)."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(client)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)
