"""Headers on every response: no sniffing, no referrer, no framing, a strict CSP.

HTML pages (the dashboard, the Swagger UI) may load only their own scripts, styles and
images (`data:` images too: Swagger UI's stylesheet has its icons inline): no inline
script or style, no `eval`. Everything else loads nothing at all. A handler that sets
one of these headers itself keeps its own value.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

# HTML pages: their own origin only, nothing inline, never in a frame.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Anything else (JSON, metrics, event streams) loads nothing at all.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def security_headers(response: web.StreamResponse) -> None:
    """Add the headers every response carries (the CSP of a page to HTML ones)."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    html = response.content_type == "text/html"
    headers.setdefault("Content-Security-Policy", PAGE_CSP if html else API_CSP)


async def _on_response_prepare(_request: web.Request, response: web.StreamResponse) -> None:
    security_headers(response)


def setup(app: web.Application) -> None:
    """Add the headers to every response of `app`."""
    app.on_response_prepare.append(_on_response_prepare)
