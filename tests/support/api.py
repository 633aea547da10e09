"""Helpers for the control plane's tests: the app in this process over httpx, or `serve` as a real process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from scheduler_seed.server.app import create_app
from scheduler_seed.server.auth import Tokens, parse_tokens
from scheduler_seed.server.config import ServerSettings
from scheduler_seed.server.notify import Notifier
from shared.settings import Settings
from tests.support.runtime import wait_until

ROOT = Path(__file__).resolve().parents[2]
VIEWER_TOKEN = "viewer-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"
TOKENS = f"watcher:viewer:{VIEWER_TOKEN},deployer:operator:{OPERATOR_TOKEN}"

# The seed's cheat sheet, section 10.2 of 001_646fd6323acf08fa.txt (the mock variants), byte for byte.
CHEAT_SHEET_MOCK = [
    """{
  "job_id": "mock-buy-scanner",
  "queue": "mock.jobs.buy-scanner",
  "cron_expr": "*/5 * * * *",
  "reschedule_mode": "queue",
  "interval_seconds": 120,
  "description": "Mock buy scanner auto",
  "enabled": true
}""",
    """{
  "job_id": "mock-news",
  "queue": "mock.jobs.news-crawler",
  "cron_expr": "*/10 * * * *",
  "reschedule_mode": "queue",
  "interval_seconds": 600,
  "enabled": true
}""",
    """{
  "job_id": "mock-price-start",
  "queue": "mock.jobs.price-monitor",
  "cron_expr": "0 0 * * *",
  "reschedule_mode": "queue",
  "default_params": { "action": "start", "interval_seconds": 86400 },
  "enabled": true
}""",
    """{
  "job_id": "mock-price-stop",
  "queue": "mock.jobs.price-monitor",
  "cron_expr": "0 1 * * *",
  "reschedule_mode": "queue",
  "default_params": { "action": "stop", "interval_seconds": 86400 },
  "enabled": true
}""",
    """{
  "job_id": "mock-scout",
  "queue": "mock.jobs.scout",
  "cron_expr": "0 9 * * 1-5",
  "reschedule_mode": "queue",
  "interval_seconds": 86400,
  "description": "Mock scout job",
  "enabled": true
}""",
]


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    scope: str,
    tokens: Tokens | None = None,
    notifier: Notifier | None = None,
    connected: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process (lifespan included) and a client speaking to it; with `connected`, once both
    connections are made."""
    app = create_app(settings, scope, tokens or Tokens([]), ServerSettings(), notifier)
    async with app.router.lifespan_context(app):
        if connected:

            async def ready() -> bool:
                return app.state.backend.pool is not None and app.state.backend.amqp is not None

            await wait_until(ready, 30, "the server's connections")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_set() -> Tokens:
    return parse_tokens(TOKENS)


def spawn_server(scope: str, port: int, settings: Settings, log_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python -m scheduler_seed serve` as a real process; its output goes to a log file in `log_dir`."""
    full_env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "CONTROL_API_TOKENS": "",
        "PYTHONUNBUFFERED": "1",  # its log is complete when a test reads it
        **env,
    }
    log = (log_dir / f"serve-{scope}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler_seed", "serve", "--scope", scope, "--port", str(port)],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def wait_healthy(
    base_url: str, proc: subprocess.Popen[bytes], timeout: float = 120, want: str = "ok"
) -> dict[str, Any]:
    """Poll /healthz until it says `want` (the process must stay alive meanwhile). The bound is generous: a process
    started while `make test` runs its soaks beside it on two cores took more than 30 s to import and answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            last = httpx.get(f"{base_url}/healthz", timeout=2).json()
            if last.get("status") == want:
                return dict(last)
        time.sleep(0.2)
    raise AssertionError(f"/healthz did not say {want!r} within {timeout} s (last: {last})")


async def remove_scope(settings: Settings, scope: str) -> None:
    """Delete a scope's job queues and rows (what the `cleanup_scope` fixture does, for module fixtures)."""
    import aio_pika
    import asyncpg

    from shared import topology
    from shared.store import jobs as jobs_store

    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        rows = await conn.fetch("SELECT job_id, queue FROM scheduler.jobs WHERE scope = $1", scope)
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        try:
            channel = await connection.channel()
            await topology.delete_scope(channel, scope, [r["job_id"] for r in rows], [r["queue"] for r in rows])
        finally:
            await connection.close()
        await jobs_store.delete_scope(conn, scope)
        await conn.execute("DELETE FROM scheduler.audit WHERE scope = $1", scope)
    finally:
        await conn.close()
