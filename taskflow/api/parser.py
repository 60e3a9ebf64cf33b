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
from webargs.aiohttpparser import AIOHTTPParser

from taskflow.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from taskflow.validation import as_details, decode_json


class TaskflowParser(AIOHTTPParser):
    """Strict JSON (415 for other types, 400 for broken JSON); errors as TaskflowErrors."""

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
            raise ValidationFailed("the task is not valid", as_details(messages["json"]))
        details: dict[str, Any] = {}
        for location_messages in messages.values():
            details.update(as_details(location_messages))
        raise BadRequest("the request's parameters are not valid", details)
