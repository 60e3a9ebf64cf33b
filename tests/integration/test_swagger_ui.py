"""The Swagger UI in a real browser: Debian's chromium, driven by Playwright, offline.

Playwright's own browser downloads are never used: `executable_path` is the system
chromium (`apt-get install chromium`; `.ci/run` installs it). The page must render every
operation from assets served by taskflow alone; a screenshot is kept in the test's tmp
dir (`swagger-ui.png`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import ConsoleMessage, Request, async_playwright

from taskflow.app import create_app
from taskflow.config import Role, Settings
from tests.conftest import ServeApp

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--no-first-run",
]
OPERATIONS = {
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{task_id}"),
    ("GET", "/tasks/{task_id}/events"),
    ("GET", "/events"),
    ("POST", "/tasks/{task_id}/cancel"),
    ("POST", "/tasks/{task_id}/retry"),
    ("POST", "/tasks/cancel"),
    ("POST", "/tasks/retry"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/api/docs"),
    ("GET", "/api/docs/swagger.json"),
    ("GET", "/"),
    ("GET", "/dashboard"),
    ("GET", "/stats"),
    ("GET", "/stats/rates"),
}
TIMEOUT_MS = 60_000
TOKEN = "swagger-read-token-3a9f"


def assert_works_under_a_strict_csp(csp: str | None, console: list[str]) -> None:
    """The page was sent with a CSP allowing only its own origin, and broke none of it."""
    assert csp is not None
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    violations = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
    assert not violations, console


async def test_swagger_ui_shows_every_operation_from_local_assets(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve_app(create_app(settings, poll_s=0.05))
    requested: list[str] = []
    failed: list[str] = []
    console: list[str] = []

    def on_request(request: Request) -> None:
        requested.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    def on_failed(request: Request) -> None:
        failed.append(f"{request.url}: {request.failure}")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", on_request)
            page.on("requestfailed", on_failed)
            page.on("console", on_console)
            response = await page.goto(str(server.make_url("/api/docs")), timeout=TIMEOUT_MS)
            assert response is not None
            assert response.status == 200
            csp = await response.header_value("Content-Security-Policy")
            await page.wait_for_selector(".opblock-summary", timeout=TIMEOUT_MS)
            await page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
            title = await page.locator(".info .title").inner_text()
            methods = await page.locator(".opblock-summary-method").all_inner_texts()
            paths = await page.locator(".opblock-summary-path").all_inner_texts()
            await page.screenshot(path=tmp_path / "swagger-ui.png", full_page=True)
            create = page.locator("#operations-tasks-createTask")
            await create.locator(".opblock-summary").click()
            await create.locator(".body-param__example, .highlight-code").first.wait_for(
                timeout=TIMEOUT_MS
            )
            create_text = await create.inner_text()
            await page.screenshot(path=tmp_path / "swagger-ui-create.png", full_page=True)
        finally:
            await browser.close()

    assert title.startswith("taskflow")
    shown = {
        (m.strip(), p.strip().replace("\u200b", "")) for m, p in zip(methods, paths, strict=True)
    }
    assert shown == OPERATIONS
    assert "Idempotency-Key" in create_text  # the header, with the body's example:
    assert '"title": "resize"' in create_text
    assert not failed
    assert_works_under_a_strict_csp(csp, console)
    assert requested  # the page, its assets and the document
    hosts = {urlsplit(url).hostname for url in requested}
    assert hosts == {"127.0.0.1"}, requested  # nothing left this machine
    assert any(url.endswith("/api/docs/swagger.json") for url in requested)
    assert (tmp_path / "swagger-ui.png").stat().st_size > 0


async def test_authorize_in_swagger_ui_sends_the_token(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    """With tokens set, "Authorize" then "Execute" on `GET /tasks` gets 200, not 401."""
    secured = replace(settings, api_tokens=((Role.READ, TOKEN),))
    server = await serve_app(create_app(secured, poll_s=0.05))
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: console.append(message.text))
            await page.goto(str(server.make_url("/api/docs")), timeout=TIMEOUT_MS)
            await page.locator(".btn.authorize").first.click(timeout=TIMEOUT_MS)
            dialog = page.locator(".auth-container").filter(has_text="bearerAuth")
            await dialog.locator("input").fill(TOKEN)
            await dialog.locator("button.authorize").click()
            await page.locator("button.btn-done").first.click()
            operation = page.locator("#operations-tasks-listTasks")
            await operation.locator(".opblock-summary").click()
            await operation.locator(".try-out__btn").click()
            await operation.locator(".execute").click()
            status = operation.locator(".live-responses-table tbody .response-col_status").first
            await status.wait_for(timeout=TIMEOUT_MS)
            shown = (await status.inner_text()).strip()
            curl = await operation.locator(".curl-command").inner_text()
            await page.screenshot(path=tmp_path / "swagger-ui-authorized.png", full_page=True)
        finally:
            await browser.close()
    assert shown.startswith("200"), shown
    assert f"Authorization: Bearer {TOKEN}" in curl
    assert not [m for m in console if "Content Security Policy" in m]
