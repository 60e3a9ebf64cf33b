"""Loads the named queries of `queries.sql` once, and `schema.sql`."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of `-- name: x` sections into {name: sql}; a repeated name is an error."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def queries() -> dict[str, str]:
    """All named queries, read once from the package."""
    text = resources.files("taskflow.db").joinpath("queries.sql").read_text("utf-8")
    return parse_queries(text)


@cache
def schema_sql() -> str:
    """The text of `schema.sql` (idempotent DDL)."""
    return resources.files("taskflow.db").joinpath("schema.sql").read_text("utf-8")


@cache
def schema_digest() -> str:
    """The SHA-256 of `schema.sql`, recorded in PostgreSQL once it is applied."""
    return hashlib.sha256(schema_sql().encode()).hexdigest()
