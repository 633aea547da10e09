"""The Admin UI in a real browser (Debian's chromium driven by Playwright) against a real `serve` process and a
worker: pause from the job table pauses the job in PostgreSQL, run-now puts a run in the job's runs table, and a
second run-now while the job runs shows the 409 plainly."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Dialog, async_playwright, expect

from shared.settings import Settings
from tests.support.api import spawn_server, wait_healthy
from tests.support.ports import free_port
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import fast_settings, running_worker, stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"  # browsers cannot be downloaded here: `make browser` installs Debian's package
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def server(settings: Settings, cleanup_scope: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = spawn_server(cleanup_scope, port, settings, tmp_path, CONTROL_API_HOST="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        stop_process(proc)


async def test_pause_and_run_now_from_the_job_table(
    browser: Browser, server: str, settings: Settings, cleanup_scope: str, pool: asyncpg.Pool
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as api:
        for job_id in ("ui-pause", "ui-run"):
            body = {"job_id": job_id, "cron_expr": "0 0 1 1 *", "default_params": {"sleep_sec": 4}}
            assert (await api.post("/jobs", json=body)).status_code == 201
    page = await browser.new_page()
    notes: list[str] = []

    async def answer(dialog: Dialog) -> None:  # the pause button asks for a note
        notes.append(dialog.message)
        await dialog.accept("paused from the browser")

    page.on("dialog", answer)
    await page.goto(server + "/")
    row = page.locator("#job-ui-pause")
    await expect(row).to_be_visible(timeout=15_000)
    await row.locator("button.pause").click()
    await expect(page.locator("#flash")).to_contain_text("ui-pause paused (paused from the browser)", timeout=10_000)
    stored = await pool.fetchrow(
        "SELECT enabled, pause_note FROM scheduler.jobs WHERE scope = $1 AND job_id = 'ui-pause'", cleanup_scope
    )
    assert stored is not None and (stored["enabled"], stored["pause_note"]) == (False, "paused from the browser")
    assert notes and "ui-pause" in notes[0]
    await expect(row.locator(".state")).to_contain_text("paused", timeout=10_000)  # the table refreshed by itself

    async with running_worker(fast_settings(settings, cleanup_scope), {"ui-run": (probe, ProbeParams)}):
        await page.goto(server + "/ui/job/ui-run")
        await expect(page.locator("#runs-table")).to_contain_text("no runs yet", timeout=10_000)
        await page.locator("button.run-now").click()
        await expect(page.locator("#flash")).to_contain_text("queued", timeout=10_000)
        await expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(1, timeout=15_000)
        await expect(page.locator("#runs-table")).to_contain_text("manual")

        async def running() -> bool:
            status = await pool.fetchval(
                "SELECT status FROM scheduler.job_runs WHERE scope = $1 AND job_id = 'ui-run'", cleanup_scope
            )
            return bool(status == "running")

        await wait_until(running, 15, "the run to start")
        await page.locator("button.run-now").click()
        await expect(page.locator("#flash")).to_contain_text(
            "409 Conflict: job 'ui-run' is running now", timeout=10_000
        )
        await expect(page.locator("#runs-table")).to_contain_text("succeeded", timeout=15_000)
    count = await pool.fetchval("SELECT count(*) FROM scheduler.job_runs WHERE scope = $1", cleanup_scope)
    assert count == 1  # the refused click queued nothing
    await page.goto(server + "/ui/audit")
    await expect(page.locator("#audit-table")).to_contain_text("ui:local")
    await expect(page.locator("#audit-table")).to_contain_text("paused from the browser")
    await page.goto(server + "/ui/dead")
    await expect(page.locator("#dead-table")).to_contain_text("nothing parked")
