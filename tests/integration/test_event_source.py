"""A browser's EventSource consumes both streams (Debian's chromium, driven by Playwright).

The page is the service's own (same origin). The task stream ends after `completed`;
EventSource reconnects with `Last-Event-ID: 3`, gets 204, and stops for good — as the
contract means it to.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import async_playwright

from taskflow.app import create_app
from taskflow.config import Settings
from tests.conftest import ServeApp
from tests.integration.test_swagger_ui import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

FOLLOW = """
async () => {
  const seen = {all: [], task: [], lastEventIds: [], closed: false};
  const parse = (e) => ({id: e.lastEventId, ...JSON.parse(e.data)});
  await new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error("timed out: " + JSON.stringify(seen))), 30000);
    const all = new EventSource("/events");
    all.addEventListener("status", (e) => seen.all.push(parse(e)));
    all.onopen = async () => {
      const answer = await fetch("/tasks", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({title: "from a browser"}),
      });
      const task = await answer.json();
      const one = new EventSource(`/tasks/${task.id}/events`);
      one.addEventListener("status", (e) => seen.task.push(parse(e)));
      one.onerror = () => {
        if (one.readyState !== EventSource.CLOSED) return;  // reconnecting
        seen.closed = true;
        const check = () => {
          if (seen.all.filter((e) => e.task_id === task.id).length === 3) {
            all.close();
            resolve();
          } else {
            setTimeout(check, 50);
          }
        };
        check();
      };
    };
  });
  return seen;
}
"""


async def test_event_source_in_a_browser_follows_both_streams(
    settings: Settings, serve_app: ServeApp
) -> None:
    server = await serve_app(create_app(settings, poll_s=0.05))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            await page.goto(str(server.make_url("/api/docs")), timeout=TIMEOUT_MS)
            seen: dict[str, Any] = await page.evaluate(FOLLOW)
        finally:
            await browser.close()

    task = seen["task"]
    assert [(e["id"], e["seq"], e["status"]) for e in task] == [
        ("1", 1, "new"),
        ("2", 2, "in_progress"),
        ("3", 3, "completed"),
    ]
    assert seen["closed"] is True  # after the end, a reconnect got 204: EventSource stopped
    task_id = task[0]["task_id"]
    from_all = [e for e in seen["all"] if e["task_id"] == task_id]
    assert [e["status"] for e in from_all] == ["new", "in_progress", "completed"]
    assert len({e["id"] for e in from_all}) == 3
