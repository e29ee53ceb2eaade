"""The dashboard in a real headless browser (chromium driven by playwright).

Opens the run list, opens a waiting run, answers its question in the form
generated from the wait's JSON Schema, and sees the run complete on the page.
Screenshots go to the test's folder; with ``UPDATE_SCREENSHOTS=1`` they also
replace ``docs/dashboard-runs.png`` and ``docs/dashboard-run.png``.

Needs the ``playwright`` package and a chromium executable: ``CHROMIUM`` if
set, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on PATH
(Debian: ``apt-get install chromium``). Without them it is skipped, with the
reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kitaru.integrations.fastapi import create_app
from tests.api.api_flows import FLOWS, attempts, searches
from tests.api.conftest import server_thread

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_SCREENSHOTS = ("dashboard-runs.png", "dashboard-run.png")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def find_chromium() -> str:
    """The chromium executable to drive, or skip (fail under CI) saying what is missing."""
    candidates = [os.environ.get("CHROMIUM", "")]
    candidates += [shutil.which(n) or "" for n in ("chromium", "chromium-browser", "google-chrome")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    _missing("no chromium executable: apt-get install chromium, or set CHROMIUM=/path/to/it")
    raise AssertionError("unreachable")


@pytest.fixture
def browser_page() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed: pip install -e '.[dev]'")
    executable = find_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def _wait(client: httpx.Client, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        info: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if info["status"] == status or time.monotonic() > deadline:
            assert info["status"] == status, info
            return info
        time.sleep(0.02)


def _start(client: httpx.Client, flow: str, **inputs: Any) -> str:
    response = client.post(f"/api/flows/{flow}/runs", json={"input": inputs})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def _save(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" and name in DOC_SCREENSHOTS:
        shutil.copyfile(path, DOCS / name)
    return path


def test_answer_a_waiting_run_in_the_browser(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    attempts.clear()
    searches.clear()
    app = create_app(
        FLOWS, store=f"sqlite:///{tmp_path / 'kitaru.db'}", artifacts=str(tmp_path / "art")
    )
    with server_thread(app) as url, httpx.Client(base_url=url, timeout=15) as client:
        # Some history for the list: finished, failed and waiting runs.
        _wait(client, _start(client, "counter", steps=12), "completed")
        _wait(client, _start(client, "fragile", n=3), "failed")
        _wait(client, _start(client, "approval", topic="quarterly report"), "waiting")
        run = _start(client, "editorial", title="Durable agents, explained")
        _wait(client, run, "waiting")

        page.goto(f"{url}/")
        rows = page.locator("#runs tbody tr")
        rows.first.wait_for()
        assert rows.count() == 4
        waiting_row = page.locator(f'#runs tr[data-run="{run}"]')
        assert waiting_row.locator(".badge").inner_text() == "waiting"
        assert "Review this draft:" in waiting_row.inner_text()
        page.locator("#live[data-state='on']").wait_for()
        _save(page, tmp_path, "dashboard-runs.png")

        waiting_row.locator("a").click()
        wait_card = page.locator("#wait")
        wait_card.wait_for()
        assert "this draft argues one point" in wait_card.inner_text()
        timeline = page.locator("#timeline tbody tr")
        assert timeline.count() == 2
        assert "research" in timeline.first.inner_text()
        assert timeline.first.locator("td").nth(4).inner_text() == "2"  # attempts
        # The form comes from the wait's JSON Schema (a pydantic model).
        wait_card.get_by_label("Approved").check()
        wait_card.get_by_label("Score").fill("5")
        wait_card.get_by_label("Comment").fill("Clear and short.")
        page.locator("#live[data-state='on']").wait_for()
        _save(page, tmp_path, "dashboard-run.png")
        wait_card.get_by_role("button", name="Send answer").click()

        page.locator("h1 .badge[data-status='completed']").wait_for(timeout=15_000)
        output = page.locator("#output").inner_text()
        assert '"approved": true' in output
        assert '"score": 5' in output
        assert page.locator("#wait").count() == 0
        assert page.locator("#timeline tbody tr").count() == 3
        info = client.get(f"/api/runs/{run}").json()
        assert info["output"] == {
            "title": "Durable agents, explained",
            "approved": True,
            "score": 5,
        }
        _save(page, tmp_path, "dashboard-run-completed.png")

        # Replay from the draft: a new run reuses `research`, drafts again and waits.
        page.locator('select[aria-label="replay from"]').select_option(label="from #1 write_draft")
        page.locator("#replay").click()
        page.locator("h1 .badge[data-status='waiting']").wait_for(timeout=15_000)
        replayed = page.url.rsplit("/", 1)[1]
        assert replayed != run
        assert client.get(f"/api/runs/{replayed}").json()["replay_of"] == run
        assert "replay of" in page.locator(".meta").inner_text()
        # Cancel it (after the browser's confirmation dialog).
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#cancel").click()
        page.locator("h1 .badge[data-status='cancelled']").wait_for(timeout=15_000)

        # Start a run from the list page, with the form made from the flow's signature.
        page.goto(f"{url}/#/")
        page.get_by_role("button", name="Start a run").click()
        page.locator('select[aria-label="flow to start"]').select_option("approval")
        page.get_by_label("topic").fill("annual report")
        page.get_by_role("button", name="Start", exact=True).click()
        page.locator("#wait").wait_for(timeout=15_000)
        assert "draft about annual report" in page.locator("#wait").inner_text()
        page.get_by_role("button", name="Yes").click()
        page.locator("h1 .badge[data-status='completed']").wait_for(timeout=15_000)
        assert "published" in page.locator("#output").inner_text()


def test_dashboard_asks_for_the_token(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    token = "dashboard-test-token-0123456789"
    app = create_app(
        FLOWS,
        token=token,
        store=f"sqlite:///{tmp_path / 'kitaru.db'}",
        artifacts=str(tmp_path / "art"),
    )
    with server_thread(app) as url, httpx.Client(base_url=url, timeout=15) as client:
        auth = {"Authorization": f"Bearer {token}"}
        started = client.post("/api/flows/counter/runs", json={"input": {"steps": 2}}, headers=auth)
        assert started.status_code == 201
        page.goto(f"{url}/")
        page.locator("#token").fill("wrong")
        page.get_by_role("button", name="Open").click()
        page.locator("#token").wait_for()  # asked again
        page.locator("#token").fill(token)
        page.get_by_role("button", name="Open").click()
        page.locator("#runs tbody tr[data-run]").first.wait_for()
        assert page.locator("#runs tbody tr[data-run]").count() == 1
