"""Run a service (`python -m services.<name>`) as a real process in a test scope, and read its output."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika

from shared.messages import JobMessage
from shared.publisher import Publisher
from shared.settings import Settings
from tests.support.runtime import FAST, ROOT, stop_process, wait_until

# Outside-system settings a developer may have exported must not leak into a test's service.
OUTSIDE_VARS = ("MARKET_API_URL", "BROKER_API_URL", "LLM_API_URL", "NEWS_FEED_URL", "SERVICE_MODE", "METRICS_PORT")


def service_env(settings: Settings, scope: str, mode: str, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in OUTSIDE_VARS}
    return {
        **base,
        **{k.upper(): v for k, v in FAST.items()},
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_SCOPE": scope,
        "SERVICE_MODE": mode,
        "METRICS_PORT": "0",
        **env,
    }


class ServiceProcess:
    """A running service; `output()` is what it printed so far (for assertion messages)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path

    def output(self, tail: int = 4000) -> str:
        return self.log_path.read_bytes()[-tail:].decode("utf-8", "replace")

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose `event` is `name`, in order."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    found.append(event)
        return found


@contextlib.contextmanager
def service_process(
    name: str, settings: Settings, scope: str, mode: str = "mock", **env: str
) -> Iterator[ServiceProcess]:
    """Start the service; stop it (SIGTERM, then kill) when the block ends."""
    log_path = Path(f"/tmp/{scope}-{name}-{time.monotonic_ns()}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=service_env(settings, scope, mode, **env),
            stdout=log,
            stderr=log,
        )
    try:
        yield ServiceProcess(name, proc, log_path)
    finally:
        stop_process(proc)


async def wait_for_process(
    proc: ServiceProcess, predicate: Callable[[], Awaitable[bool]], timeout: float, what: str
) -> None:
    """`wait_until`, and on timeout show what the service printed (and whether it exited)."""
    try:
        await wait_until(predicate, timeout, what)
    except AssertionError as exc:
        state = f"exited with {proc.proc.returncode}" if proc.proc.poll() is not None else "still running"
        raise AssertionError(f"{exc}; {proc.name} {state}; its output:\n{proc.output()}") from None


async def publish_manual(
    amqp: aio_pika.abc.AbstractRobustConnection,
    scope: str,
    queue: str,
    job_id: str,
    *,
    params: dict[str, Any] | None = None,
    scheduled_for: datetime | None = None,
) -> uuid.UUID:
    """A manual message straight to the work queue (what run-now does); returns its run_id."""
    message = JobMessage(job_id=job_id, scope=scope, params=params or {}, **_when(scheduled_for))
    await publish_to_work(amqp, scope, queue, message)
    return message.run_id


async def publish_to_work(
    amqp: aio_pika.abc.AbstractRobustConnection, scope: str, queue: str, message: JobMessage
) -> None:
    """`message` straight to the work queue `queue` of `scope`, confirmed, on a channel of its own."""
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await Publisher(channel, scope).to_work(queue, message)
    finally:
        await channel.close()


def _when(scheduled_for: datetime | None) -> dict[str, datetime]:
    return {} if scheduled_for is None else {"scheduled_for": scheduled_for}
