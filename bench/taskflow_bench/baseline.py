"""The baseline of the http scenario: a bare aiohttp JSON handler on uvloop.

`python -m taskflow_bench.baseline --port N` serves `POST /tasks` by decoding the JSON
body and answering 201 with a small JSON object: the least a JSON API on aiohttp can do.
The bench drives it with the same client as taskflow, so taskflow's rate is a ratio.
"""

from __future__ import annotations

import argparse
import uuid

import uvloop
from aiohttp import web


async def create(request: web.Request) -> web.Response:
    """Decode the body and answer 201 with an id, as a create would."""
    body = await request.json()
    return web.json_response(
        {"id": str(uuid.uuid4()), "title": body.get("title"), "status": "new"}, status=201
    )


async def ping(_request: web.Request) -> web.Response:
    """Readiness for the bench."""
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    """The baseline application."""
    app = web.Application()
    app.router.add_post("/tasks", create)
    app.router.add_get("/ping", ping)
    return app


def main() -> None:
    """Serve the baseline on 127.0.0.1:`--port` until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        loop=uvloop.new_event_loop(),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
