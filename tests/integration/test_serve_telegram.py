"""`serve` with TELEGRAM_BOT_TOKEN set: the same process answers the allowed chat's commands and forwards
Alertmanager's webhook (`POST /alerts`) to it, one line per alert, through a local stand-in of the Bot API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from shared.control import Control
from shared.settings import Settings
from tests.support.api import spawn_server, wait_healthy
from tests.support.ports import free_port
from tests.support.runtime import stop_process
from tests.support.telegram_standin import TOKEN, TelegramStandIn

pytestmark = pytest.mark.integration

CHAT = 4242


async def test_serve_runs_the_bot_and_forwards_alerts_to_its_chats(
    settings: Settings, cleanup_scope: str, tmp_path: Path
) -> None:
    async with Control(settings, cleanup_scope) as control:
        await control.put({"job_id": "tick", "cron_expr": "0 0 1 1 *"})
    standin = TelegramStandIn().start()
    port = free_port()
    proc = spawn_server(
        cleanup_scope, port, settings, tmp_path,
        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_ALLOWED_CHATS=str(CHAT), TELEGRAM_API_URL=standin.url,
        TELEGRAM_POLL_TIMEOUT_SEC="1",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_healthy, base, proc)
        answers = await standin.ask(CHAT, "/job pause tick maintenance")
        assert "tick" in answers[0] and "pause" in answers[0].lower()
        async with Control(settings, cleanup_scope) as control:
            assert not (await control.job("tick")).enabled
        payload = {
            "version": "4", "status": "firing", "receiver": "scheduler",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "SchedulerJobFailing", "job_id": "tick", "scope": cleanup_scope},
                "annotations": {"summary": "tick failed 3 times in a row"},
            }],
        }  # fmt: skip
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            answered = await api.post("/alerts", json=payload)
        assert answered.status_code == 200 and answered.json()["forwarded"] is True
        await standin.wait_for("sendMessage", count=2)
        alert = standin.sent(CHAT)[-1].text
        assert "FIRING" in alert and "SchedulerJobFailing" in alert and "tick failed 3 times" in alert
        assert TOKEN not in (tmp_path / f"serve-{cleanup_scope}.log").read_text()  # the token is never logged
    finally:
        stop_process(proc)
        standin.stop()
