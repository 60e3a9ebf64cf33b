"""No secret leaves the process: a real `taskflow serve` run, its output searched.

The service gets a password in `DATABASE_URL` and in `AMQP_URL` (a wrong one, so the
consumer fails and logs it again and again), API tokens of every role and a metrics
token; it then serves good requests, refused ones, a token in a query string, requests
the HTTP parser refuses, and stops. Neither its output (every log line, access log
included) nor any response body holds any of those secrets.
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession

from taskflow_bench.harness.environment import service_environment
from taskflow_bench.harness.service import Service

DB_PASSWORD = "db-pass-Zq81xV"
AMQP_PASSWORD = "amqp-pass-Wm27kL"
TOKENS = {
    "read": "read-token-Hs93jQeP0a",
    "write": "write-token-Lp44rTyU1b",
    "admin": "admin-token-Nc65wEiO2c",
}
METRICS_TOKEN = "metrics-token-Bv16qAzX3d"
SECRETS = [DB_PASSWORD, AMQP_PASSWORD, *TOKENS.values(), METRICS_TOKEN]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def test_no_secret_in_the_output_or_the_responses(
    db_url: str,
) -> None:
    env = service_environment(
        {
            "database_url": db_url.replace("//postgres@", f"//postgres:{DB_PASSWORD}@", 1),
            "amqp_url": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:5672/",
            "api_tokens": ",".join(f"{role}:{token}" for role, token in TOKENS.items()),
            "metrics_token": METRICS_TOKEN,
            "host": "127.0.0.1",
            "log_format": "json",
        }
    )
    service = await Service.start("service", env)
    bodies: list[bytes] = []
    try:
        async with ClientSession() as http:
            await service.wait_ready()
            url = service.url

            async def call(method: str, path: str, **kwargs: object) -> int:
                async with http.request(method, f"{url}{path}", **kwargs) as response:  # type: ignore[arg-type]
                    bodies.append(await response.read())
                    return response.status

            assert (
                await call("POST", "/tasks", json={"title": "t"}, headers=bearer(TOKENS["write"]))
                == 201
            )
            assert (
                await call("POST", "/tasks", json={"title": "t"}, headers=bearer(TOKENS["read"]))
                == 403
            )
            assert await call("GET", "/tasks", headers=bearer(TOKENS["admin"] + "x")) == 401
            assert await call("GET", f"/tasks?access_token={TOKENS['admin']}") == 401
            assert (
                await call("GET", "/tasks", headers={"Cookie": f"token={TOKENS['admin']}"}) == 401
            )
            assert await call("GET", "/metrics", headers=bearer(TOKENS["admin"])) == 401
            assert await call("GET", "/metrics", headers=bearer(METRICS_TOKEN)) == 200
            assert await call("GET", "/health/ready") == 200
            assert await call("GET", "/health/live") == 200
            # A token where a task id goes: the 404 echoes it to its sender only; the access
            # log line of that path must not hold it.
            where = f"{url}/tasks/{TOKENS['read']}"
            async with http.get(where, headers=bearer(TOKENS["read"])) as response:
                assert response.status == 404
            bodies.append(
                await raw(
                    url,
                    f"GET /tasks HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKENS['admin']}\r\n"
                    "X-Bad: \x01\r\n\r\n".encode(),
                )
            )
            await asyncio.sleep(1.5)  # a few more failed AMQP connection attempts
        assert await service.stop() == 0
    finally:
        await service.kill()

    output = service.output
    errors = [e for e in service.events() if e.get("level") in ("error", "critical")]
    assert not errors, errors
    assert "authentication enabled" in output
    assert "http request" in output  # the access log is part of what was searched
    assert "http request refused by the parser" in output
    for secret in SECRETS:
        assert secret not in output, secret
        for body in bodies:
            assert secret.encode() not in body, (secret, body)


async def test_no_secret_in_a_failed_start_up(db_url: str) -> None:
    missing = db_url.rsplit("/", 1)[0] + "/taskflow_no_such_database"
    env = service_environment(
        {
            "database_url": missing.replace("//postgres@", f"//postgres:{DB_PASSWORD}@", 1),
            "amqp_url": f"amqp://guest:{AMQP_PASSWORD}@127.0.0.1:5672/",
            "api_tokens": f"admin:{TOKENS['admin']}",
            "log_format": "json",
        }
    )
    service = await Service.start("service", env)
    try:
        assert await service.wait_exit() == 1
    finally:
        await service.kill()
    assert service.event("taskflow could not start")["error"].endswith("does not exist")
    for secret in SECRETS:
        assert secret not in service.output, secret
