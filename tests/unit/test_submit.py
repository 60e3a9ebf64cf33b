"""The client side of `taskflow submit`: task bodies, keys and the progress bar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from taskflow.progress import ProgressBar
from taskflow.submit import BadInput, keys, read_bodies


def test_read_bodies_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"title": "a"}\n\n  \n{"title": "b"}  \n')
    assert read_bodies(str(path)) == [b'{"title": "a"}', b'{"title": "b"}']


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"title": "a"}\n{oops\n', "line 2: not valid JSON"),
        (b"[1]\n", "line 1: not a JSON object"),
    ],
)
def test_read_bodies_names_the_bad_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        read_bodies(str(path))


def test_read_bodies_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read"):
        read_bodies(str(tmp_path / "nope"))


def test_keys() -> None:
    assert list(keys(None, 2)) == [None, None]
    assert list(keys("k", 1)) == ["k"]
    assert list(keys("k", 3)) == ["k-1", "k-2", "k-3"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    terminal = _Terminal()
    bar = ProgressBar(4, "publish", stream=terminal)
    for _ in range(4):
        bar.advance()
    bar.close()
    assert "publish [" in terminal.getvalue()
    assert "4/4 100%" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")

    piped = io.StringIO()
    quiet = ProgressBar(4, "publish", stream=piped)
    quiet.advance(4)
    quiet.close()
    assert piped.getvalue() == ""
