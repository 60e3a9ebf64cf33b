"""The OpenAPI 3 document and the Swagger UI, both served by taskflow itself.

aiohttp-apigami builds the document from the routes' decorators; `setup` finishes two
things that it only does for Swagger 2.0: it drops the `produces` list apigami adds to
every operation (OpenAPI 3 has no such field: each response names its content types),
and it puts the `example=` given to `json_schema` on the request body, where OpenAPI 3
wants it. The Swagger UI page loads only the assets packaged with aiohttp-apigami, from
this service, with the online validator badge off (it would call validator.swagger.io),
and is started by a script file of taskflow's (the page's CSP forbids inline scripts).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp_apigami import OpenApiVersion, docs, setup_aiohttp_apispec
from aiohttp_apigami.constants import API_SPEC_ATTR
from aiohttp_apigami.swagger_ui import SWAGGER_UI_STATIC_FILES

from taskflow import __version__
from taskflow.api import auth
from taskflow.config import Role

OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")

DOCS_PATH = "/api/docs"
DOCUMENT_PATH = "/api/docs/swagger.json"
STATIC_PATH = auth.SWAGGER_STATIC_PATH
# taskflow's own script for the page (no inline script: the page's CSP forbids them).
ASSETS_PATH = auth.SWAGGER_ASSETS_PATH
ASSETS_DIR = Path(__file__).with_name("swagger")

DESCRIPTION = """\
Durable tasks over HTTP and RabbitMQ, kept in PostgreSQL.

Every error is `{"error": {"code", "message", "details"}}` with `details` an object
(per-field messages for 400 and 422). A `503` always carries `Retry-After`.
`POST /tasks` takes an optional `Idempotency-Key`: a repeat with the same key and body
returns the first task (`200`), the same key with another body is `409`.
"""

TAGS = [
    {"name": "tasks", "description": "Create tasks and follow them to `completed` or `failed`."},
    {"name": "events", "description": "Live streams (Server-Sent Events) of status changes."},
    {"name": "operations", "description": "Health checks and Prometheus metrics."},
    {"name": "dashboard", "description": "The operators' page and the statistics it shows."},
    {"name": "documentation", "description": "This document and its Swagger UI."},
]

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>taskflow API</title>
  <link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css">
  <link rel="stylesheet" href="{STATIC_PATH}/index.css">
  <link rel="icon" type="image/png" href="{STATIC_PATH}/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS_PATH}/swagger-initializer.js"></script>
</body>
</html>
"""


@docs(
    tags=["documentation"],
    operation_id="getSwaggerUi",
    summary="Swagger UI",
    description="An interactive view of this document; every asset is served by taskflow.",
    responses={
        200: {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
)
async def swagger_ui(_request: web.Request) -> web.Response:
    """GET /api/docs."""
    return web.Response(text=_PAGE, content_type="text/html")


@docs(
    tags=["documentation"],
    operation_id="getOpenApiDocument",
    summary="This OpenAPI document",
    responses={
        200: {
            "description": "OpenAPI 3.0",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def openapi_document(request: web.Request) -> web.Response:
    """GET /api/docs/swagger.json."""
    return web.json_response(request.app[OPENAPI])


def setup(app: web.Application) -> None:
    """Add the docs routes and build the document from every documented route of `app`.

    Call it after every other route is added: the document is built here, once.
    """
    app.router.add_get(DOCS_PATH, swagger_ui, allow_head=False)
    app.router.add_get(DOCUMENT_PATH, openapi_document, allow_head=False)
    app.router.add_static(STATIC_PATH, SWAGGER_UI_STATIC_FILES)
    app.router.add_static(ASSETS_PATH, ASSETS_DIR)
    _fresh_responses(app)
    with warnings.catch_warnings():
        # aiohttp-apigami 0.9 keeps its spec under a string key (an AppKey from 1.x on).
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        spec = setup_aiohttp_apispec(
            app,
            title="taskflow",
            version=__version__,
            url="",  # served by `openapi_document`, after `_finish`
            in_place=True,
            openapi_version=OpenApiVersion.V303,
            info={"description": DESCRIPTION},
            tags=TAGS,
        )
    app[OPENAPI] = _finish(spec.swagger_dict(), app)


# Each documented handler's responses as decorated, before apispec ever saw them.
_PRISTINE_RESPONSES: dict[Any, dict[Any, Any]] = {}


def _fresh_responses(app: web.Application) -> None:
    """Give apispec a copy of each route's documented responses.

    A response documented with `content` reaches apispec as the decorator's own dict, and
    apispec replaces its schemas by `$ref`s in place: the next application built in the
    same process (tests) would find refs to components it never registered.
    """
    for route in app.router.routes():
        handler_spec = getattr(route.handler, API_SPEC_ATTR, None)
        if handler_spec is not None:
            pristine = _PRISTINE_RESPONSES.setdefault(route.handler, handler_spec["responses"])
            handler_spec["responses"] = copy.deepcopy(pristine)


def _finish(document: dict[str, Any], app: web.Application) -> dict[str, Any]:
    for path_item in document["paths"].values():
        for operation in path_item.values():
            operation.pop("produces", None)
            operation.pop("consumes", None)
    for route in app.router.routes():
        handler_spec = getattr(route.handler, API_SPEC_ATTR, None)
        if handler_spec is None or route.resource is None:
            continue
        for schema in handler_spec["schemas"]:
            example = {k: v for k, v in schema.get("example", {}).items() if k != "add_to_refs"}
            if schema["location"] == "json" and example:
                operation = document["paths"][route.resource.canonical][route.method.lower()]
                operation["requestBody"]["content"]["application/json"]["example"] = example
    _document_security(document, app.router)
    return document


def _document_security(spec: dict[str, Any], router: web.UrlDispatcher) -> None:
    """Declare the bearer scheme in the OpenAPI document `spec`, and each operation's role.

    Swagger UI's "Authorize" then sends the token on every operation that needs one.
    """
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token of TASKFLOW_API_TOKENS (roles read ⊂ write ⊂ admin); "
                "needed only when the service has tokens configured.",
            },
            "metricsToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "TASKFLOW_METRICS_TOKEN; needed only when it is set.",
            },
        }
    )
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for route in router.routes():
        resource = route.resource
        need = auth.requirement_of(route)
        operation = (
            spec["paths"].get(resource.canonical, {}).get(route.method.lower())
            if resource is not None
            else None
        )
        if operation is None:
            continue
        if need is None:
            need = Role.ADMIN
        if need is auth.OPEN:
            operation["security"] = []
            continue
        responses = operation.setdefault("responses", {})
        responses["401"] = {
            "description": "No token, or not a valid one",
            "headers": {
                "WWW-Authenticate": {
                    "description": '`Bearer`, with `error="invalid_token"` for a wrong one.',
                    "schema": {"type": "string"},
                    "required": True,
                }
            },
            **error,
        }
        if need is auth.METRICS:
            operation["security"] = [{}, {"metricsToken": []}]
            operation["x-taskflow-role"] = "metrics"
            continue
        assert isinstance(need, Role)
        operation["security"] = [{"bearerAuth": []}]
        operation["x-taskflow-role"] = need.value
        responses["403"] = {"description": f"The token's role is below {need.value}", **error}
        note = f"Needs a token with the `{need.value}` role or above (when tokens are set)."
        operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
