"""The parser of queries.sql, and the file itself: every query named once and used."""

from __future__ import annotations

import inspect
import re

import pytest

from taskflow.db import connector, migrate, store
from taskflow.db.migrate import migrations
from taskflow.db.queries import parse_queries, queries


def test_sections_are_split_by_name() -> None:
    text = """-- A header comment that belongs to no query.

-- name: first
-- What the first query does.
SELECT 1;

-- name: second_one
SELECT *
FROM t
WHERE a = $1;
"""
    assert parse_queries(text) == {
        "first": "-- What the first query does.\nSELECT 1",
        "second_one": "SELECT *\nFROM t\nWHERE a = $1",
    }


def test_a_name_marker_must_be_a_whole_line() -> None:
    text = "-- name: real\nSELECT '-- name: not_a_query';\n"
    assert parse_queries(text) == {"real": "SELECT '-- name: not_a_query'"}


def test_text_without_names_has_no_queries() -> None:
    assert parse_queries("-- just comments\nSELECT 1;\n") == {}


def test_a_name_used_twice_is_an_error_not_a_silent_override() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: q\nSELECT 1;\n-- name: q\nSELECT 2;\n")


def test_every_query_is_named_once_non_empty_and_without_a_trailing_semicolon() -> None:
    loaded = queries()
    assert loaded
    for name, sql in loaded.items():
        assert sql.strip(), name
        assert not sql.rstrip().endswith(";"), name


def test_every_query_is_used_by_the_db_layer_and_every_used_query_exists() -> None:
    source = "".join(inspect.getsource(m) for m in (store, connector, migrate))
    used = set(re.findall(r'_fetch\(\s*"(\w+)"', source))
    used |= set(re.findall(r'(?:q|queries)\["(\w+)"\]', source))
    assert used == set(queries())


def test_migrations_are_numbered_from_one_without_gaps_and_not_empty() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
    for migration in found:
        assert any(verb in migration.sql for verb in ("CREATE", "ALTER", "DROP")), migration.name
