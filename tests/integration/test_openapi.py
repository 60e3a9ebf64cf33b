"""The OpenAPI document: valid, complete, and true of the live service (schemathesis)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from taskflow.api.auth import OPEN, ROUTE_ROLES, requirement_of
from taskflow.app import create_app
from taskflow.config import Role, Settings
from tests.conftest import ServeApp
from tests.integration.support import run_command

Client = TestClient[web.Request, web.Application]

# Every check that holds for an API whose pagination cursor is opaque: schemathesis's
# `positive_data_acceptance` would need a schema that says which cursors are ours.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
    ]
)
TOKEN = "schemathesis-admin-token"
OPERATIONS = {
    ("post", "/tasks"),
    ("get", "/tasks"),
    ("get", "/tasks/{task_id}"),
    ("get", "/tasks/{task_id}/events"),
    ("post", "/tasks/{task_id}/cancel"),
    ("post", "/tasks/{task_id}/retry"),
    ("post", "/tasks/cancel"),
    ("post", "/tasks/retry"),
    ("get", "/events"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/api/docs"),
    ("get", "/api/docs/swagger.json"),
    ("get", "/"),
    ("get", "/dashboard"),
    ("get", "/stats"),
    ("get", "/stats/rates"),
}


async def document(client: Client) -> dict[str, Any]:
    """The served OpenAPI document."""
    response = await client.get("/api/docs/swagger.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref`."""
    while "$ref" in node:
        target: dict[str, Any] = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


async def test_document_is_valid_openapi_3(client: Client) -> None:
    doc = await document(client)
    validate(doc)  # raises on any violation of the OpenAPI 3.0 schema
    assert doc["openapi"].startswith("3.0")


async def test_document_describes_every_route(client: Client) -> None:
    doc = await document(client)
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == OPERATIONS
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and not isinstance(route.resource, web.StaticResource)
    }
    assert served == OPERATIONS  # the Swagger UI's static assets are the only omission

    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(set(ids)) == len(ids) == len(OPERATIONS)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["tags"], (method, path)
            assert op["summary"], (method, path)
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and not path.startswith("/health"):
                    schema = response["content"]["application/json"]["schema"]
                    assert resolve(doc, schema) == doc["components"]["schemas"]["Error"]
                if code == "503":
                    assert response["headers"]["Retry-After"]["required"] is True


async def test_document_details_of_the_task_routes(client: Client) -> None:
    doc = await document(client)
    create = doc["paths"]["/tasks"]["post"]
    body = create["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["example"]["title"]
    assert set(create["responses"]) == {
        "200", "201", "400", "401", "403", "409", "413", "415", "422", "503"
    }  # fmt: skip
    assert create["responses"]["201"]["headers"]["Location"]["required"] is True
    (header,) = create["parameters"]
    assert header["in"] == "header"
    assert header["name"] == "Idempotency-Key"
    assert header["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}
    task_create = doc["components"]["schemas"]["TaskCreate"]
    assert task_create["required"] == ["title"]
    assert task_create["additionalProperties"] is False

    listing = {p["name"]: p for p in doc["paths"]["/tasks"]["get"]["parameters"]}
    assert listing["limit"]["schema"] == {
        "type": "integer",
        "default": 50,
        "minimum": 1,
        "maximum": 1000,
    }
    assert listing["status"]["schema"]["items"]["enum"] == [
        "new",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
    ]
    assert listing["status"]["explode"] is True
    assert listing["cursor"]["schema"]["maxLength"] == 200

    for path in ("/tasks/{task_id}", "/tasks/{task_id}/events"):
        (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "path"]
        assert param["in"] == "path"
        assert param["required"] is True
        assert param["schema"] == {"type": "string", "format": "uuid"}

    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain", "application/openmetrics-text"}
    for schema in ("Task", "TaskList", "EventList", "Error", "Liveness", "Readiness"):
        assert schema in doc["components"]["schemas"]


async def test_document_gives_the_control_routes_their_contract_codes(client: Client) -> None:
    doc = await document(client)
    expected = {  # (success codes, and whether a 404 / 409 answers for the request)
        "/tasks/{task_id}/cancel": ({"200", "202"}, True),  # 202: a running task
        "/tasks/{task_id}/retry": ({"200"}, True),
        "/tasks/cancel": ({"200"}, False),  # per-id outcomes instead
        "/tasks/retry": ({"200"}, False),
    }
    for path, (success, per_task) in expected.items():
        codes = set(doc["paths"][path]["post"]["responses"])
        assert {c for c in codes if c.startswith("2")} == success, path
        assert {"404", "409"} & codes == ({"404", "409"} if per_task else set()), path


async def test_document_declares_the_bearer_scheme_and_each_role(client: Client) -> None:
    doc = await document(client)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    routes = {
        (route.method.lower(), route.resource.canonical): route
        for route in client.app.router.routes()
        if route.resource is not None
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            need = requirement_of(routes[method, path])
            assert need is not None, (method, path)
            assert need in ROUTE_ROLES.values()
            if need is OPEN:
                assert op["security"] == [], (method, path)
            elif isinstance(need, Role):
                assert op["security"] == [{"bearerAuth": []}], (method, path)
                assert op["x-taskflow-role"] == need.value
                assert need.value in op["description"]
                assert {"401", "403"} <= set(op["responses"]), (method, path)
                challenge = op["responses"]["401"]["headers"]["WWW-Authenticate"]
                assert challenge["required"] is True
            else:  # /metrics: open unless TASKFLOW_METRICS_TOKEN is set
                assert op["security"] == [{}, {"metricsToken": []}], (method, path)
    assert doc["paths"]["/tasks"]["post"]["x-taskflow-role"] == "write"
    assert doc["paths"]["/tasks"]["get"]["x-taskflow-role"] == "read"
    assert doc["paths"]["/health/ready"]["get"]["security"] == []


async def test_document_details_of_the_event_streams(client: Client) -> None:
    doc = await document(client)
    stream = doc["paths"]["/events"]["get"]
    task_stream = doc["paths"]["/tasks/{task_id}/events"]["get"]
    for op in (stream, task_stream):
        content = op["responses"]["200"]["content"]
        event = resolve(doc, content["text/event-stream"]["schema"])
        assert set(event["required"]) == {"seq", "status", "attempt", "at", "reason", "task_id"}
        headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        assert headers == {"Last-Event-ID"}
        assert "400" in op["responses"]
    assert "application/json" in task_stream["responses"]["200"]["content"]
    assert "204" in task_stream["responses"]
    query = {p["name"]: p for p in stream["parameters"] if p["in"] == "query"}
    assert set(query) == {"status", "task_id"}
    assert query["status"]["explode"] is True


async def test_schemathesis_finds_nothing(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    """Fuzz every operation of the live service (real PostgreSQL) with schemathesis.

    Positive and negative cases, 50 per operation and phase, deterministic; a JUnit
    report is kept in the test's tmp dir. The service has tokens: schemathesis sends an
    admin one, and `ignored_auth` checks that a request without it is refused.
    """
    secured = replace(settings, api_tokens=((Role.ADMIN, TOKEN),))
    server = await serve_app(create_app(secured, poll_s=0.05))
    url = str(server.make_url("/api/docs/swagger.json"))
    command = [sys.executable, "-m", "schemathesis.cli", "run", url]
    command += ["--checks", CHECKS, "--max-examples", "50", "--generation-deterministic"]
    # The global stream never ends: it cannot be fuzzed by reading whole responses (its
    # 400s are tested in test_events.py).
    command += ["--exclude-path", "/events"]
    command += ["--workers", "1", "--request-timeout", "20", "--no-color"]
    command += ["--header", f"Authorization: Bearer {TOKEN}"]
    command += ["--report", "junit", "--report-dir", str(tmp_path)]
    code, out, err = await run_command(
        *command, env={"NO_COLOR": "1", "COLUMNS": "120"}, cwd=tmp_path, timeout=100
    )
    report = out + err
    assert code == 0, report
    # schemathesis leaves out the operation that serves the document it reads; the global
    # stream is excluded above.
    total = len(OPERATIONS) - 1
    assert f"Operations:       {total - 1} selected / {total} total" in report, report
