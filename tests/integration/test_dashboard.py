"""The operators' dashboard in a real browser: every view, live updates, actions, safety.

Screenshots of each view are saved in the test's tmp dir (never in the repository).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from taskflow.api.headers import PAGE_CSP
from taskflow.app import create_app
from taskflow.config import Role, Settings
from tests.conftest import ServeApp
from tests.integration.dashboard_browser import PHONE, open_dashboard, wait_live

XSS = "<img src=x onerror=alert(1)>"


async def serve(serve_app: ServeApp, settings: Settings) -> TestServer:
    return await serve_app(create_app(settings, poll_s=0.05))


async def post(server: TestServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with ClientSession() as session:
        response = await session.post(server.make_url(path), json=body)
        assert response.status in (200, 201, 202), await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def get(server: TestServer, path: str) -> dict[str, Any]:
    async with ClientSession() as session:
        response = await session.get(server.make_url(path))
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def wait_status(server: TestServer, task_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            task = await get(server, f"/tasks/{task_id}")
            if task["status"] == status:
                return task
            await asyncio.sleep(0.05)


def row(page: Page, task_id: str) -> Any:
    return page.locator(f"#task-rows tr[data-id='{task_id}']")


async def test_every_view_loads_under_the_csp_with_no_errors(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, settings)
    done = await post(server, "/tasks", {"title": "resize", "payload": {"w": 100}})
    await wait_status(server, done["id"], "completed")
    async with ClientSession() as session:
        page_response = await session.get(server.make_url("/dashboard"))
        assert page_response.headers["X-Content-Type-Options"] == "nosniff"
        assert page_response.headers["Referrer-Policy"] == "no-referrer"
        csp = page_response.headers["Content-Security-Policy"]
        assert csp == PAGE_CSP
        assert "default-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        script = await session.get(server.make_url("/dashboard/static/main.js"))
        assert script.status == 200
        assert script.headers["X-Content-Type-Options"] == "nosniff"
        assert script.content_type in ("text/javascript", "application/javascript")
        root = await session.get(server.make_url("/"), allow_redirects=False)
        assert root.status == 302
        assert root.headers["Location"] == "/dashboard"

    async with open_dashboard(str(server.make_url("/"))) as (page, problems):
        assert page.url.endswith("/dashboard")
        await wait_live(page)
        await expect(page.locator("#counts .status-completed .card-value")).to_have_text("1")
        await expect(page.locator("#instances tr")).to_have_count(1)
        await expect(page.locator("#chart svg polyline")).to_have_count(4)
        # `created` is drawn first, as a wide band, so an equal `completed` line on top of it
        # (every task finished as soon as it was created) leaves both visible.
        created = page.locator("#chart svg polyline").first
        await expect(created).to_have_class("line line-created")
        await expect(created).to_have_css("stroke-width", "7px")
        await expect(page.locator("#chart svg polyline.line-completed")).to_have_css(
            "stroke-width", "2px"
        )
        await page.screenshot(path=tmp_path / "overview.png", full_page=True)

        # Keyboard only: the Tasks link, then the task's link.
        await page.locator("nav a[data-view=tasks]").focus()
        await page.keyboard.press("Enter")
        await expect(row(page, done["id"])).to_be_visible()
        await page.screenshot(path=tmp_path / "tasks.png", full_page=True)
        await row(page, done["id"]).locator("a.title").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#task-title")).to_have_text("resize")
        await expect(page.locator("#task-history tr")).to_have_count(3)
        await expect(page.locator("#task-payload")).to_contain_text('"w": 100')
        await page.screenshot(path=tmp_path / "detail.png", full_page=True)
        assert not problems, problems

    async with open_dashboard(
        str(server.make_url("/dashboard#/tasks")), viewport=PHONE, color_scheme="dark"
    ) as (page, problems):
        await expect(row(page, done["id"])).to_be_visible()
        await page.screenshot(path=tmp_path / "tasks-phone-dark.png", full_page=True)
        assert not problems, problems


async def test_new_tasks_appear_and_change_status_in_place(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, replace(settings, work_min_s=1.0, work_max_s=1.0))
    async with open_dashboard(str(server.make_url("/dashboard#/tasks"))) as (page, problems):
        await wait_live(page)
        await page.evaluate("window.notReloaded = true")
        created_at = time.monotonic()
        task = await post(server, "/tasks", {"title": "arrives live"})
        await expect(row(page, task["id"])).to_be_visible(timeout=2000)
        assert time.monotonic() - created_at < 2.0
        shown = await row(page, task["id"]).element_handle()
        await expect(row(page, task["id"]).locator(".badge")).to_have_text("in progress")
        await expect(row(page, task["id"]).locator(".badge")).to_have_text("completed")
        assert await shown.evaluate("node => node.isConnected")  # the same row, changed

        # A burst: every task shows, read with a few page requests, not one per task.
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        burst = await asyncio.gather(
            *(post(server, "/tasks", {"title": f"burst {i}"}) for i in range(30))
        )
        await expect(page.locator("#task-rows tr")).to_have_count(31)
        for task in burst:
            await expect(row(page, task["id"])).to_be_visible()
        reads = [url for url in requested if "/tasks" in url]
        assert 1 <= len(reads) <= 10, reads
        assert await page.evaluate("window.notReloaded") is True
        await page.screenshot(path=tmp_path / "tasks-live.png", full_page=True)

        # The detail view follows the task too.
        second = await post(server, "/tasks", {"title": "followed"})
        await page.goto(str(server.make_url(f"/dashboard#/tasks/{second['id']}")))
        await expect(page.locator("#task-status")).to_have_text("completed")
        statuses = await page.locator("#task-history .badge").all_inner_texts()
        assert statuses == ["new", "in progress", "completed"]
        assert not problems, problems


async def test_cancel_a_running_task_after_confirming(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, replace(settings, work_min_s=60.0, work_max_s=60.0))
    task = await post(server, "/tasks", {"title": "long job"})
    await wait_status(server, task["id"], "in_progress")
    url = str(server.make_url(f"/dashboard#/tasks/{task['id']}"))
    async with open_dashboard(url) as (page, problems):
        await wait_live(page)
        await expect(page.locator("#task-retry")).to_be_hidden()
        cancel = page.locator("#task-cancel")
        await cancel.click()
        dialog = page.locator("#confirm")
        await expect(dialog).to_be_visible()
        await page.screenshot(path=tmp_path / "cancel-confirm.png")
        await page.locator("#confirm-no").click()  # first: changed my mind
        await expect(dialog).to_be_hidden()
        assert (await get(server, f"/tasks/{task['id']}"))["status"] == "in_progress"

        await cancel.click()
        await page.locator("#confirm-reason").fill("operator said so")
        await page.locator("#confirm-yes").click()
        await expect(page.locator("#notice")).to_contain_text("cancel")
        await expect(page.locator("#task-status")).to_have_text("cancelled")
        await expect(page.locator("#task-history tr").last).to_contain_text("operator said so")
        await expect(page.locator("#task-cancel")).to_be_hidden()
        await expect(page.locator("#task-retry")).to_be_visible()
        await page.screenshot(path=tmp_path / "cancelled.png", full_page=True)
        assert not problems, problems
    assert (await get(server, f"/tasks/{task['id']}"))["status"] == "cancelled"


async def test_retry_a_failed_task(settings: Settings, serve_app: ServeApp, tmp_path: Path) -> None:
    server = await serve(serve_app, replace(settings, failure_rate=1.0))
    task = await post(server, "/tasks", {"title": "flaky"})
    await wait_status(server, task["id"], "failed")
    url = str(server.make_url(f"/dashboard#/tasks/{task['id']}"))
    async with open_dashboard(url) as (page, problems):
        await wait_live(page)
        await expect(page.locator("#task-error")).to_have_text("emulated processing failure")
        await expect(page.locator("#task-cancel")).to_be_hidden()
        await page.locator("#task-retry").click()
        await page.locator("#confirm-yes").click()
        await expect(page.locator("#notice")).to_contain_text("retried")
        # It runs again (and fails again: the failure rate is 1), live, with attempt 2.
        await expect(page.locator("#task-history tr")).to_have_count(6)
        attempts = await page.locator("#task-history tr td:nth-child(3)").all_inner_texts()
        assert attempts[-1] == "2"
        await page.screenshot(path=tmp_path / "retried.png", full_page=True)
        assert not problems, problems


async def test_filter_search_paging_and_bulk_cancel(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    # One processor busy for a minute: the tasks after the first stay `new`.
    server = await serve(
        serve_app, replace(settings, processors=1, work_min_s=60.0, work_max_s=60.0)
    )
    first = await post(server, "/tasks", {"title": "Resize photo"})
    await wait_status(server, first["id"], "in_progress")
    waiting = [await post(server, "/tasks", {"title": f"report {i}"}) for i in range(3)]
    async with open_dashboard(str(server.make_url("/dashboard#/tasks"))) as (page, problems):
        await wait_live(page)
        await expect(page.locator("#task-rows tr")).to_have_count(4)

        await page.locator("#task-filter input[value=new]").check()
        await expect(page.locator("#task-rows tr")).to_have_count(3)
        assert "status=new" in page.url

        await page.locator("#task-filter input[value=new]").uncheck()
        await page.locator("#search").fill("RESIZE")
        await page.locator("#search").press("Enter")
        await expect(page.locator("#task-rows tr")).to_have_count(1)
        await expect(page.locator("#task-rows a.title")).to_have_text("Resize photo")
        await page.locator("#search").fill(waiting[1]["id"])
        await page.locator("#search").press("Enter")
        await expect(page.locator("#task-rows a.title")).to_have_text("report 1")
        await page.screenshot(path=tmp_path / "search.png", full_page=True)

        await page.locator("#search").fill("report")
        await page.locator("#search").press("Enter")
        await expect(page.locator("#task-rows tr")).to_have_count(3)
        await page.locator("#select-all").check()
        await expect(page.locator("#selected-count")).to_have_text("3 selected")
        await page.locator("#bulk-cancel").click()
        await page.locator("#confirm-yes").click()
        await expect(page.locator("#notice")).to_have_text("Cancel: 3 cancelled")
        await expect(page.locator("#task-rows .badge")).to_have_text(["cancelled"] * 3)
        await page.screenshot(path=tmp_path / "bulk-cancelled.png", full_page=True)
        for task in waiting:
            assert (await get(server, f"/tasks/{task['id']}"))["status"] == "cancelled"

        await expect(page.locator("#bulk-cancel")).to_be_disabled()  # nothing left to cancel
        await page.locator("#bulk-retry").click()
        await page.locator("#confirm-yes").click()
        await expect(page.locator("#notice")).to_have_text("Retry: 3 retried")
        await expect(page.locator("#task-rows .badge")).to_have_text(["new"] * 3)
        assert not problems, problems
    for task in waiting:
        assert (await get(server, f"/tasks/{task['id']}"))["status"] == "new"


async def test_task_text_is_shown_as_text(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, settings)
    task = await post(
        server,
        "/tasks",
        {"title": XSS, "description": "<script>alert(2)</script>", "payload": {"html": XSS}},
    )
    async with open_dashboard(str(server.make_url("/dashboard#/tasks"))) as (page, problems):
        await expect(row(page, task["id"]).locator("a.title")).to_have_text(XSS)
        assert await page.locator("#task-rows img").count() == 0
        await page.goto(str(server.make_url(f"/dashboard#/tasks/{task['id']}")))
        await expect(page.locator("#task-title")).to_have_text(XSS)
        await expect(page.locator("#task-fields")).to_contain_text("<script>alert(2)</script>")
        await expect(page.locator("#task-payload")).to_contain_text(XSS)
        assert await page.locator("main img, main script").count() == 0
        await page.screenshot(path=tmp_path / "xss.png", full_page=True)
        await page.wait_for_timeout(300)  # an onerror would have fired by now
        assert not problems.dialogs
        assert not problems, problems


async def test_a_401_asks_for_a_token_kept_for_the_tab(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    """With TASKFLOW_API_TOKENS set, the page (open) asks for a token on the first 401."""
    reader, admin = "read-token-1", "admin-token-1"
    tokens = ((Role.READ, reader), (Role.ADMIN, admin))
    server = await serve(
        serve_app, replace(settings, api_tokens=tokens, work_min_s=60.0, work_max_s=60.0)
    )
    async with ClientSession() as session:
        assert (await session.get(server.make_url("/dashboard"))).status == 200
        assert (await session.get(server.make_url("/dashboard/static/main.js"))).status == 200
        for path in ("/stats", "/stats/rates", "/tasks", "/events"):
            refused = await session.get(server.make_url(path))
            assert refused.status == 401, path
            assert refused.headers["WWW-Authenticate"].startswith("Bearer"), path

    seen: list[tuple[str, str | None]] = []
    async with open_dashboard(str(server.make_url("/dashboard"))) as (page, problems):
        page.on(
            "request",
            lambda request: seen.append((request.url, request.headers.get("authorization"))),
        )
        dialog = page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await page.screenshot(path=tmp_path / "token.png")
        await page.locator("#token-input").fill("wrong")
        await page.locator("#token-input").press("Enter")
        await expect(page.locator("#token-text")).to_contain_text("not accepted")
        await page.locator("#token-input").fill(reader)
        await page.locator("#token-input").press("Enter")
        await expect(dialog).to_be_hidden()
        await wait_live(page)
        await expect(page.locator("#instances tr")).to_have_count(1)
        assert await page.evaluate("sessionStorage.getItem('taskflow.token')") == reader
        assert await page.evaluate("document.cookie") == ""

        # A read token may look, not act: the refusal (403) is shown, nothing changes.
        async with ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            created = await session.post(server.make_url("/tasks"), json={"title": "guarded"})
            task = await created.json()
        await page.goto(str(server.make_url(f"/dashboard#/tasks/{task['id']}")))
        await expect(page.locator("#task-title")).to_have_text("guarded")
        await page.locator("#task-cancel").click()
        await page.locator("#confirm-yes").click()
        await expect(page.locator("#notice")).to_contain_text("Cancel refused")
        await page.screenshot(path=tmp_path / "forbidden.png")
        await expect(page.locator("#task-cancel")).to_be_visible()
        assert all("401" in m or "403" in m for m in problems.console), problems
        assert not problems.errors
        assert not problems.dialogs
    assert any(url.endswith("/events") and auth == f"Bearer {reader}" for url, auth in seen)
    assert all(reader not in url for url, _ in seen)


async def test_a_lost_stream_is_shown_and_resumed_with_nothing_missed(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    """The instance the page talks to restarts; meanwhile another one runs a task."""
    first = await serve(serve_app, settings)
    port = first.port
    async with open_dashboard(str(first.make_url("/dashboard#/tasks"))) as (page, problems):
        await wait_live(page)
        streams: list[dict[str, str]] = []
        page.on(
            "request",
            lambda request: streams.append(request.headers) if "/events" in request.url else None,
        )
        seen = await post(first, "/tasks", {"title": "seen live"})  # the page has a cursor now
        await expect(row(page, seen["id"]).locator(".badge")).to_have_text("completed")
        await first.close()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected")
        await expect(page.locator("#connection")).to_contain_text("Disconnected")
        await page.screenshot(path=tmp_path / "disconnected.png")

        other = await serve(serve_app, settings)
        missed = await post(other, "/tasks", {"title": "created while disconnected"})
        await wait_status(other, missed["id"], "completed")

        await serve_app(create_app(settings, poll_s=0.05), port=port)  # back again
        await wait_live(page)
        # Replayed from where the stream stopped: the task appears, already completed.
        await expect(row(page, missed["id"]).locator(".badge")).to_have_text("completed")
        assert any("last-event-id" in headers for headers in streams), streams
        assert all("ERR_CONNECTION_REFUSED" in m for m in problems.console), problems
        assert not problems.errors


async def test_keyset_pages_forward_and_back(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, settings)
    for i in range(53):
        await post(server, "/tasks", {"title": f"page task {i:02d}"})
    async with open_dashboard(str(server.make_url("/dashboard#/tasks"))) as (page, problems):
        titles = page.locator("#task-rows a.title")
        await expect(titles).to_have_count(50)
        await expect(titles.first).to_have_text("page task 52")
        await expect(page.locator("#page-prev")).to_be_disabled()
        await page.locator("#page-next").click()
        await expect(titles).to_have_text(["page task 02", "page task 01", "page task 00"])
        await expect(page.locator("#page-next")).to_be_disabled()
        await page.screenshot(path=tmp_path / "page-2.png", full_page=True)
        await page.locator("#page-prev").click()
        await expect(titles).to_have_count(50)
        await expect(titles.last).to_have_text("page task 03")
        assert not problems, problems


async def test_the_overview_follows_the_counts_live(
    settings: Settings, serve_app: ServeApp, tmp_path: Path
) -> None:
    server = await serve(serve_app, settings)
    async with open_dashboard(str(server.make_url("/dashboard"))) as (page, problems):
        await wait_live(page)
        completed = page.locator("#counts .status-completed .card-value")
        await expect(completed).to_have_text("0")
        await page.evaluate("window.notReloaded = true")
        await asyncio.gather(*(post(server, "/tasks", {"title": f"count {i}"}) for i in range(3)))
        await expect(completed).to_have_text("3")  # without a reload
        assert await page.evaluate("window.notReloaded") is True
        await page.locator("#counts .status-completed").click()  # a card opens its list
        await expect(page.locator("#task-rows tr")).to_have_count(3)
        assert "status=completed" in page.url
        assert not problems, problems
