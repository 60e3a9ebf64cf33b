"""Driving the dashboard in Debian's chromium (Playwright, never a downloaded browser).

`open_dashboard` starts a headless browser on a page of the dashboard and records what
must never happen: console errors (CSP violations are reported there), uncaught
exceptions and JavaScript dialogs (an `alert` would mean a title ran as HTML).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from playwright.async_api import (
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    ViewportSize,
    async_playwright,
)

from tests.integration.test_swagger_ui import CHROMIUM, CHROMIUM_ARGS

TIMEOUT_MS = 30_000
LAPTOP = ViewportSize(width=1280, height=860)
PHONE = ViewportSize(width=390, height=844)


@dataclass
class Problems:
    """What went wrong in the page."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.console or self.errors or self.dialogs)


@asynccontextmanager
async def open_dashboard(
    url: str,
    *,
    viewport: ViewportSize | None = None,
    color_scheme: str = "light",
) -> AsyncIterator[tuple[Page, Problems]]:
    """A page at `url` (the dashboard), with the problems it reports."""
    problems = Problems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.console.append(message.text)

    def on_error(error: Error) -> None:
        problems.errors.append(str(error))

    async def on_dialog(dialog: Dialog) -> None:
        problems.dialogs.append(dialog.message)
        await dialog.dismiss()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            context = await browser.new_context(
                viewport=viewport or LAPTOP,
                color_scheme="dark" if color_scheme == "dark" else "light",
            )
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            page.on("console", on_console)
            page.on("pageerror", on_error)
            page.on("dialog", on_dialog)
            response = await page.goto(url)
            assert response is not None
            assert response.status == 200
            yield page, problems
        finally:
            await browser.close()


async def wait_live(page: Page) -> None:
    """Wait until the page says its event stream is connected."""
    await page.locator("#connection[data-state=live]").wait_for()
