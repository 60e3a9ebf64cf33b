"""Integers in a payload are stored exactly, or refused with a 422: never changed.

orjson reads an integer beyond 64 bits as a float (18446744073709551616 would come back
as 1.8446744073709552e19); taskflow keeps every integer of the signed and unsigned 64-bit
ranges exact, from the request through PostgreSQL back to the response, and refuses
larger ones, so nobody's data is changed silently.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.support import Client, assert_error

JSON = {"Content-Type": "application/json"}
EXACT = {
    "u64_max": 2**64 - 1,
    "i64_min": -(2**63),
    "i64_max_plus_one": 2**63,
    "nineteen_digits": 1234567890123456789,
    "digits_in_a_string": "123456789012345678901234567890",
    "list": [2**64 - 1, -(2**63), 0, 2**53 + 1],
}


async def test_integers_of_64_bits_round_trip_exactly(client: Client) -> None:
    raw = json.dumps({"title": "big", "payload": EXACT})
    response = await client.post("/tasks", data=raw, headers=JSON)
    assert response.status == 201, await response.text()
    created = json.loads(await response.text())  # the standard library keeps ints exact
    assert created["payload"] == EXACT
    again = json.loads(await (await client.get(f"/tasks/{created['id']}")).text())
    assert again["payload"] == EXACT
    listed = json.loads(await (await client.get("/tasks")).text())
    assert listed["items"][0]["payload"] == EXACT


@pytest.mark.parametrize(
    "number",
    [2**64, -(2**63) - 1, 10**30, -(10**40), int("9" * 1000)],
    ids=["u64-max-plus-one", "i64-min-minus-one", "1e30", "-1e40", "1000-digits"],
)
async def test_an_integer_beyond_64_bits_is_refused_not_rounded(
    client: Client, number: int
) -> None:
    raw = '{"title": "big", "payload": {"nested": {"n": NUMBER}}}'.replace("NUMBER", str(number))
    response = await client.post("/tasks", data=raw, headers=JSON)
    details = await assert_error(response, 422, "validation_failed")
    [message] = details["payload"]
    assert "integer beyond 64 bits" in message
    listed = await (await client.get("/tasks")).json()
    assert listed["items"] == []  # nothing stored


async def test_a_float_written_with_an_exponent_stays_a_float(client: Client) -> None:
    raw = '{"title": "f", "payload": {"f": 1e30, "g": 18446744073709551616.0}}'
    response = await client.post("/tasks", data=raw, headers=JSON)
    assert response.status == 201, await response.text()
    assert (await response.json())["payload"] == {"f": 1e30, "g": 2.0**64}
