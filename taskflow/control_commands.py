"""`taskflow cancel|retry ID…` (over HTTP) and `taskflow dead-letters list|replay` (RabbitMQ).

`cancel` and `retry` call the bulk routes (1,000 ids per request) and print one JSON line
per id (`{"id", "outcome", "status"}`, in the order given); the exit code is 1 when any id
was a conflict or not found, or the service refused the request. `dead-letters` prints one
JSON line per message; `replay` exits 1 when a message could not be replayed (capped,
not confirmed) or an `--id` was not found.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout

from taskflow.amqp.dead_letters import (
    Action,
    DeadLetter,
    list_dead_letters,
    replay_dead_letters,
)

BULK_MAX = 1000
_FAILED_OUTCOMES = frozenset({"conflict", "not_found"})


def _print(value: Any) -> None:
    print(orjson.dumps(value).decode())


async def control(
    base_url: str, action: str, ids: Sequence[str], reason: str | None, token: str | None
) -> int:
    """POST `/tasks/{action}` for `ids` in chunks; print each outcome; the exit code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failed = False
    try:
        async with ClientSession(timeout=ClientTimeout(total=60), headers=headers) as session:
            for start in range(0, len(ids), BULK_MAX):
                body: dict[str, Any] = {"ids": list(ids[start : start + BULK_MAX])}
                if reason is not None:
                    body["reason"] = reason
                url = f"{base_url}/tasks/{action}"
                async with session.post(url, json=body) as response:
                    answer = await response.read()
                    if response.status != 200:
                        print(
                            f"taskflow: HTTP {response.status}: {answer.decode()[:2000]}",
                            file=sys.stderr,
                        )
                        return 1
                for item in orjson.loads(answer)["results"]:
                    _print(item)
                    failed = failed or item["outcome"] in _FAILED_OUTCOMES
    except (ClientError, TimeoutError) as exc:
        print(f"taskflow: cannot reach {base_url}: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


async def dead_letters_list(amqp_url: str, queue: str) -> int:
    """Print every message of `<queue>.dead` (removing none); 0 unless the broker failed."""
    try:
        await list_dead_letters(amqp_url, queue, lambda letter: _print(letter.to_json()))
    except Exception as exc:  # any failure to connect or find the queue: one line
        print(
            f"taskflow: cannot read the dead letters: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    return 0


async def dead_letters_replay(
    amqp_url: str, queue: str, ids: Sequence[str] | None, *, dry_run: bool
) -> int:
    """Replay dead letters (all when `ids` is None); print what happened to each."""
    seen: set[str | None] = set()
    trouble = False

    def report(letter: DeadLetter, action: Action) -> None:
        nonlocal trouble
        seen.add(letter.message_id)
        trouble = trouble or action in (Action.CAPPED, Action.FAILED)
        _print(
            {
                "message_id": letter.message_id,
                "action": action.value,
                "replays": letter.replays,
                "reason": letter.reason,
            }
        )

    try:
        await replay_dead_letters(
            amqp_url, queue, set(ids) if ids is not None else None, report, dry_run=dry_run
        )
    except Exception as exc:  # any failure to connect or find the queues: one line
        print(
            f"taskflow: cannot replay the dead letters: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    for missing in sorted(set(ids or ()) - {i for i in seen if i is not None}):
        _print({"message_id": missing, "action": "not_found"})
        trouble = True
    return 1 if trouble else 0
