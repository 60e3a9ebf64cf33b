"""`taskflow submit`: task bodies from the command line or a file, over HTTP or RabbitMQ.

One task prints what the service answered (HTTP: the task; AMQP: the queue and the
`message_id`). Many (`--count`, `--file`) show a progress bar on a terminal and print a
JSON summary. The exit code is 0 only when every task was accepted.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout

from taskflow.amqp.publisher import publish_tasks
from taskflow.progress import ProgressBar

HTTP_WINDOW = 32
_ERRORS_SHOWN = 5


class BadInput(ValueError):
    """The command line or the file cannot be turned into task bodies."""


def read_bodies(path: str) -> list[bytes]:
    """The non-blank lines of a JSON-lines file (`-`: stdin), each a JSON object."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    bodies = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BadInput(f"{path}, line {number}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadInput(f"{path}, line {number}: not a JSON object")
        bodies.append(line.strip())
    return bodies


def keys(key: str | None, count: int) -> Iterator[str | None]:
    """Idempotency keys for `count` tasks: `KEY` for one, `KEY-1` … `KEY-n` for many."""
    for number in range(1, count + 1):
        if key is None:
            yield None
        else:
            yield key if count == 1 else f"{key}-{number}"


@dataclass
class Tally:
    """What happened to the tasks of one run, by outcome, with the first errors."""

    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str, error: str | None = None) -> None:
        """Count one task."""
        self.outcomes[outcome] += 1
        if error is not None and len(self.errors) < _ERRORS_SHOWN:
            self.errors.append(error)


def auth_headers(token: str | None) -> dict[str, str]:
    """The `Authorization` header for `token` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def post_one(url: str, body: bytes, key: str | None, token: str | None = None) -> int:
    """POST one task and print the answer; 0 when it was created or found."""
    try:
        async with ClientSession(
            timeout=ClientTimeout(total=30), headers=auth_headers(token)
        ) as session:
            status, text = await _post(session, url, body, key)
    except (ClientError, TimeoutError) as exc:
        print(f"taskflow: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0 if status in (200, 201) else 1


async def _post(session: ClientSession, url: str, body: bytes, key: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


async def publish_one(
    url: str, queue: str, body: bytes, key: str | None, *, queue_type: str = "classic"
) -> int:
    """Publish one task message and print its `message_id`; 0 once the broker confirmed."""
    message_id = key or str(uuid.uuid4())
    outcome: list[str | None] = []
    try:
        await publish_tasks(url, queue, [(body, message_id)], outcome.append, queue_type)
    except Exception as exc:  # any failure to connect or declare: report, do not trace
        print(f"taskflow: cannot publish to RabbitMQ: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if outcome != [None]:
        print(f"taskflow: the broker did not take the message: {outcome}", file=sys.stderr)
        return 1
    print(orjson.dumps({"queue": queue, "message_id": message_id}).decode())
    return 0


async def post_many(
    url: str, bodies: Iterable[bytes], total: int, key: str | None, token: str | None = None
) -> int:
    """POST many tasks, `HTTP_WINDOW` at a time, with a progress bar; print a summary."""
    progress = ProgressBar(total, "POST /tasks")
    tally = Tally()
    pending = zip(bodies, keys(key, total), strict=False)

    async def post_some(session: ClientSession) -> None:
        for body, task_key in pending:  # shared: each worker takes the next one
            try:
                status, text = await _post(session, url, body, task_key)
            except (ClientError, TimeoutError) as exc:
                tally.add("failed", f"{type(exc).__name__}: {exc}")
            else:
                if status in (200, 201):
                    tally.add("created" if status == 201 else "existing")
                else:
                    tally.add("failed", f"HTTP {status}: {text[:300]}")
            progress.advance()

    async with ClientSession(
        timeout=ClientTimeout(total=60), headers=auth_headers(token)
    ) as session:
        await asyncio.gather(*(post_some(session) for _ in range(HTTP_WINDOW)))
    progress.close()
    return _summary(tally, {"via": "http", "url": url})


async def publish_many(
    url: str,
    queue: str,
    bodies: Iterable[bytes],
    total: int,
    key: str | None,
    *,
    queue_type: str = "classic",
) -> int:
    """Publish many task messages with confirms and a progress bar; print a summary."""
    progress = ProgressBar(total, f"publish to {queue}")
    tally = Tally()

    def sent(error: str | None) -> None:
        tally.add("failed" if error else "published", error)
        progress.advance()

    ids = (k or str(uuid.uuid4()) for k in keys(key, total))
    try:
        await publish_tasks(url, queue, zip(bodies, ids, strict=False), sent, queue_type)
    except Exception as exc:  # any failure to connect or declare: report, do not trace
        progress.close()
        print(f"taskflow: cannot publish to RabbitMQ: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    progress.close()
    return _summary(tally, {"via": "amqp", "queue": queue})


def _summary(tally: Tally, where: dict[str, Any]) -> int:
    for error in tally.errors:
        print(f"taskflow: {error}", file=sys.stderr)
    print(orjson.dumps({**where, **dict(sorted(tally.outcomes.items()))}).decode())
    return 1 if tally.outcomes["failed"] else 0
