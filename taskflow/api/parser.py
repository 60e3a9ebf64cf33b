"""The webargs parser behind aiohttp-apigami's `validation_middleware`.

It reads JSON bodies with taskflow's strict decoder and turns every validation error
into a `TaskflowError`, so the error middleware renders them like any other error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import marshmallow as ma
from aiohttp import web
from webargs import core
from webargs._types import ArgMap, ValidateArg
from webargs.aiohttpparser import AIOHTTPParser

from taskflow.api.schemas import IdempotencyHeaderSchema
from taskflow.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from taskflow.validation import (
    IDEMPOTENCY_KEY_MAX,
    TaskCreateSchema,
    as_details,
    decode_json,
    quick_load,
    unstorable,
)


class TaskflowParser(AIOHTTPParser):
    """Strict JSON (415 for other types, 400 for broken JSON); errors as TaskflowErrors.

    The two schemas of `POST /tasks` have a fast path for valid input (webargs and
    marshmallow were a third of the route's CPU); anything else takes webargs' way, so
    errors look exactly as before.
    """

    async def parse(
        self,
        argmap: ArgMap[web.Request],
        req: web.Request | None = None,
        *,
        location: str | None = None,
        unknown: str | None = core._UNKNOWN_DEFAULT_PARAM,
        validate: ValidateArg = None,
        error_status_code: int | None = None,
        error_headers: Mapping[str, str] | None = None,
    ) -> Any:
        """webargs' `parse`, with the fast path for the create route's schemas."""
        if req is not None and validate is None:
            quick = await self._quick(argmap, req, location)
            if quick is not None:
                return quick
        return await super().parse(
            argmap,
            req,
            location=location,
            unknown=unknown,
            validate=validate,
            error_status_code=error_status_code,
            error_headers=error_headers,
        )

    async def _quick(
        self, argmap: ArgMap[web.Request], req: web.Request, location: str | None
    ) -> dict[str, Any] | None:
        if location == "headers" and type(argmap) is IdempotencyHeaderSchema:
            # The same rules as the schema's field: absent, or 1..200 storable characters.
            key = req.headers.get("Idempotency-Key")
            if key is None:
                return {}
            if 1 <= len(key) <= IDEMPOTENCY_KEY_MAX and unstorable(key) is None:
                return {"idempotency_key": key}
        elif location == "json" and type(argmap) is TaskCreateSchema:
            data = await self.load_json(req, argmap)
            if data is not core.missing:
                return quick_load(data)
        return None

    async def load_json(self, req: web.Request, schema: ma.Schema) -> Any:
        """Decode the body; an absent body is `missing` (then required fields fail)."""
        if not req.body_exists:
            return core.missing
        if not core.is_json(req.content_type):
            raise UnsupportedMediaType(
                f"send the body as application/json, not {req.content_type or 'nothing'}",
                {"content_type": req.content_type},
            )
        return decode_json(await req.read())

    def handle_error(
        self,
        error: ma.ValidationError,
        req: web.Request,
        schema: ma.Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        """Raise `ValidationFailed` (422) for a body, `BadRequest` (400) for anything else."""
        messages = as_details(error.messages)
        if "json" in messages:
            what = "the task" if isinstance(schema, TaskCreateSchema) else "the body"
            raise ValidationFailed(f"{what} is not valid", as_details(messages["json"]))
        details: dict[str, Any] = {}
        for location_messages in messages.values():
            details.update(as_details(location_messages))
        raise BadRequest("the request's parameters are not valid", details)
