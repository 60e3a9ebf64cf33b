"""The rules of a task body (shared by HTTP and AMQP): decoding and validation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from taskflow.errors import InvalidJson, ValidationFailed
from taskflow.models import Source
from taskflow.validation import (
    DESCRIPTION_MAX,
    PAYLOAD_MAX_BYTES,
    PAYLOAD_MAX_DEPTH,
    TITLE_MAX,
    check_idempotency_key,
    decode_json,
    load_new_task,
    unstorable,
)


def nested(depth: int) -> dict[str, Any]:
    """`{"a": {"a": ... 1}}`, `depth` objects deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    result: dict[str, Any] = value
    return result


def invalid(data: Any) -> dict[str, Any]:
    """The `details` of the ValidationFailed that loading `data` raises."""
    with pytest.raises(ValidationFailed) as caught:
        load_new_task(data, Source.HTTP)
    details = caught.value.details
    assert isinstance(details, dict)
    assert details
    return details


# -- decode_json --------------------------------------------------------------------


def test_decode_json_reads_utf8_json() -> None:
    assert decode_json('{"title": "größe 😀"}'.encode()) == {"title": "größe 😀"}


def test_decode_json_keeps_lone_surrogate_escapes_for_the_schema_to_refuse() -> None:
    assert decode_json(b'{"title": "\\ud800"}') == {"title": "\ud800"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"title": "x"} trailing',
        b"{'title': 'x'}",
        b'{"title": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"title": "\xff\xfe"}',
        b'\xef\xbb\xbf{"title": "x"}',  # a BOM
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": -Infinity}',
        b'{"n": 1e999}',  # overflows a double: would be stored as null
        b'{"n": -1e999, "s": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,  # deeper than any parser recursion limit
        b'{"s": "\\ud800", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_decode_json_refuses_what_is_not_strict_utf8_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson):
        decode_json(raw)


# -- titles and descriptions ---------------------------------------------------------------


@pytest.mark.parametrize("title", ["x", "t" * TITLE_MAX, "😀" * TITLE_MAX, " leading space"])
def test_valid_titles(title: str) -> None:
    new = load_new_task({"title": title}, Source.HTTP)
    assert new.title == title
    assert new.description is None
    assert new.payload == {}
    assert new.source is Source.HTTP


@pytest.mark.parametrize("title", ["", "t" * (TITLE_MAX + 1), None, 5, ["x"], {"x": 1}, True])
def test_invalid_titles(title: Any) -> None:
    assert set(invalid({"title": title})) == {"title"}


def test_title_is_required() -> None:
    assert set(invalid({"description": "no title"})) == {"title"}


@pytest.mark.parametrize("description", [None, "", "d" * DESCRIPTION_MAX])
def test_valid_descriptions(description: str | None) -> None:
    new = load_new_task({"title": "x", "description": description}, Source.AMQP)
    assert new.description == description
    assert new.source is Source.AMQP


@pytest.mark.parametrize("description", ["d" * (DESCRIPTION_MAX + 1), 1, ["d"], {"d": 1}])
def test_invalid_descriptions(description: Any) -> None:
    assert set(invalid({"title": "x", "description": description})) == {"description"}


# -- payloads ------------------------------------------------------------------------


def payload_of_size(size: int) -> dict[str, Any]:
    """A payload whose compact JSON encoding is exactly `size` bytes."""
    payload = {"k": "x" * (size - len(b'{"k":""}'))}
    assert len(orjson.dumps(payload)) == size
    return payload


def test_a_payload_of_exactly_64_kib_is_accepted() -> None:
    payload = payload_of_size(PAYLOAD_MAX_BYTES)
    assert PAYLOAD_MAX_BYTES == 65536
    assert load_new_task({"title": "x", "payload": payload}, Source.HTTP).payload == payload


def test_a_payload_one_byte_over_64_kib_is_refused() -> None:
    details = invalid({"title": "x", "payload": payload_of_size(PAYLOAD_MAX_BYTES + 1)})
    assert set(details) == {"payload"}
    assert "65537" in str(details["payload"])


def test_payload_defaults_to_an_empty_object_and_keeps_any_json() -> None:
    payload = {"w": 100, "tags": ["a", "b"], "nested": {"ok": True, "none": None, "f": 1.5}}
    assert load_new_task({"title": "x", "payload": payload}, Source.HTTP).payload == payload


@pytest.mark.parametrize("payload", [None, [], [1], "x", 1, True])
def test_a_payload_must_be_an_object(payload: Any) -> None:
    assert set(invalid({"title": "x", "payload": payload})) == {"payload"}


@pytest.mark.parametrize(
    "payload",
    [
        nested(300),  # PostgreSQL's JSON encoder (orjson) stops at 255 levels
        nested(990),  # near the decoder's limit: no RecursionError while checking it
        {"n": 2**64},  # beyond 64-bit integers
        {"n": float("nan")},
        {"n": float("inf")},
    ],
    ids=["nested-300", "nested-990", "big-int", "nan", "infinity"],
)
def test_a_payload_that_cannot_be_stored_as_json_is_refused(payload: dict[str, Any]) -> None:
    assert set(invalid({"title": "x", "payload": payload})) == {"payload"}


def test_an_idempotency_key_does_not_make_an_unencodable_payload_pass() -> None:
    with pytest.raises(ValidationFailed):
        load_new_task({"title": "x", "payload": nested(300)}, Source.AMQP, "key-1")


# -- unknown fields and non-objects ----------------------------------------------------


def test_unknown_fields_are_refused_not_dropped() -> None:
    details = invalid({"title": "x", "priority": 5, "Title": "y"})
    assert set(details) == {"priority", "Title"}


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ([], "list"),
        ([{"title": "x"}], "list"),
        ("x", "str"),
        (1, "int"),
        (1.5, "float"),
        (None, "NoneType"),
        (True, "bool"),
    ],
)
def test_the_body_must_be_an_object(body: Any, got: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_new_task(body, Source.HTTP)
    assert caught.value.message == "the body must be a JSON object"
    assert caught.value.details == {"_schema": [f"Expected a JSON object, got {got}."]}


# -- what PostgreSQL cannot store ---------------------------------------------------------

UNSTORABLE = ["\x00", "a\x00b", "\ud800", "x\udfff", "\udc80tail"]


@pytest.mark.parametrize("bad", UNSTORABLE)
@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("title", lambda s: {"title": s}),
        ("description", lambda s: {"title": "x", "description": s}),
        ("payload", lambda s: {"title": "x", "payload": {s: 1}}),
        ("payload", lambda s: {"title": "x", "payload": {"k": s}}),
        ("payload", lambda s: {"title": "x", "payload": {"k": [1, {"deep": [s]}]}}),
        ("payload", lambda s: {"title": "x", "payload": {"k": {s: None}}}),
    ],
)
def test_nul_and_lone_surrogates_are_refused_anywhere(where: str, body: Any, bad: str) -> None:
    details = invalid(body(bad))
    assert set(details) == {where}
    assert "cannot be stored" in str(details[where])


def test_an_unknown_field_name_with_a_nul_is_refused() -> None:
    assert "\x00" in invalid({"title": "x", "\x00": 1})


def test_surrogate_pairs_are_ordinary_characters() -> None:
    new = load_new_task(decode_json(b'{"title": "\\ud83d\\ude00"}'), Source.HTTP)
    assert new.title == "😀"


def test_unstorable_finds_the_problem_anywhere() -> None:
    assert unstorable({"a": [1, 2, {"b": "ok"}]}) is None
    assert unstorable({"a": [1, 2, {"b": "\x00"}]}) == "NUL character"
    assert unstorable(["\ud800"]) == "lone UTF-16 surrogate"
    assert unstorable(nested(201)) == "value nested deeper than 200 levels"
    assert unstorable(nested(200)) is None
    assert unstorable(nested(5000)) is not None  # deeper than Python's recursion limit
    assert unstorable({"n": float("nan")}) == "number that is not finite"


# -- idempotency keys ---------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "k", "k" * 200, "clé-😀"])
def test_valid_idempotency_keys(key: str | None) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "k" * 201, "a\x00b", "a\udcffb"])
def test_invalid_idempotency_keys(key: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_idempotency_key(key)
    assert set(caught.value.details) == {"idempotency_key"}


def test_fingerprints_tell_bodies_apart_and_ignore_key_order() -> None:
    a = load_new_task({"title": "x", "payload": {"a": 1, "b": 2}}, Source.HTTP, "k")
    b = load_new_task({"payload": {"b": 2, "a": 1}, "title": "x"}, Source.AMQP, "k")
    c = load_new_task({"title": "x", "payload": {"a": 1, "b": 3}}, Source.HTTP, "k")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.id != b.id


def test_the_deepest_payload_accepted_can_be_stored_and_fingerprinted() -> None:
    payload = nested(PAYLOAD_MAX_DEPTH)
    new = load_new_task({"title": "x", "payload": payload}, Source.HTTP, "key-1")
    assert new.payload == payload
    assert len(new.fingerprint()) == 32
    assert orjson.loads(orjson.dumps(new.payload)) == payload


# -- integers beyond 64 bits -------------------------------------------------------------


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30, 2**64 - 1, -(2**63)])
def test_decoding_keeps_every_integer_exact(number: int) -> None:
    decoded = decode_json(b'{"n": %d, "s": "1234567890123456789012"}' % number)
    assert decoded == {"n": number, "s": "1234567890123456789012"}
    assert type(decoded["n"]) is int


def test_an_integer_of_thousands_of_digits_is_invalid_json_not_a_crash() -> None:
    with pytest.raises(InvalidJson, match="5000 digits"):
        decode_json(b'{"n": 1' + b"0" * 4999 + b"}")


def test_an_integer_of_up_to_4000_digits_is_decoded_and_then_refused_as_unstorable() -> None:
    # 4,000 digits is the decoder's limit (Python's own is 4,300): one more is invalid
    # JSON (400), up to it the schema refuses the number with its value shown (422).
    decoded = decode_json(b'{"n": 1' + b"0" * 3999 + b"}")
    assert decoded == {"n": 10**3999}
    with pytest.raises(InvalidJson, match="an integer of 4001 digits is out of range"):
        decode_json(b'{"n": 1' + b"0" * 4000 + b"}")
    assert invalid({"title": "x", "payload": decoded})["payload"] == [
        "Contains an integer beyond 64 bits (100000000000000000000000000000… (4000 digits)),"
        " which cannot be stored."
    ]


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        (2**64, "18446744073709551616"),
        (-(2**63) - 1, "-9223372036854775809"),
        (10**29, "1" + "0" * 29),  # 30 characters: shown whole
        (10**30, "1" + "0" * 29 + "… (31 digits)"),
    ],
)
def test_the_refusal_of_a_big_integer_shows_it_up_to_30_characters(number: int, shown: str) -> None:
    assert invalid({"title": "x", "payload": {"n": number}})["payload"] == [
        f"Contains an integer beyond 64 bits ({shown}), which cannot be stored."
    ]


def test_the_refusal_of_an_unstorable_string_names_what_it_holds() -> None:
    assert invalid({"title": "x\x00"})["title"] == [
        "Contains a NUL character, which cannot be stored."
    ]
    assert invalid({"title": "x\udc00"})["title"] == [
        "Contains a lone UTF-16 surrogate, which cannot be stored."
    ]


def test_arrays_count_toward_the_depth_limit_as_objects_do() -> None:
    def arrays(depth: int) -> list[Any]:
        value: list[Any] = [1]
        for _ in range(depth - 1):
            value = [value]
        return value

    assert unstorable(arrays(200)) is None
    assert unstorable(arrays(201)) == "value nested deeper than 200 levels"
    assert unstorable({"a": arrays(199)}) is None
    assert unstorable({"a": arrays(200)}) == "value nested deeper than 200 levels"
    assert set(invalid({"title": "x", "payload": {"a": arrays(200)}})) == {"payload"}


def test_the_64_bit_bounds_themselves_are_storable() -> None:
    payload = {"max": 2**64 - 1, "min": -(2**63)}
    assert load_new_task({"title": "x", "payload": payload}, Source.HTTP).payload == payload
