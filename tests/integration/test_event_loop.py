"""A worker process runs its jobs on the event loop SCHEDULER_EVENT_LOOP chooses, uvloop or asyncio's, and on
asyncio's where uvloop is not installed; its start-up log names the loop it runs on. The control plane (`serve`)
runs on the same choice."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared.settings import Settings
from tests.support.api import spawn_server, wait_healthy
from tests.support.ports import free_port
from tests.support.runtime import Control, spawn_worker, stop_process, wait_until

pytestmark = pytest.mark.integration

WITHOUT_UVLOOP = "tests.support.probe_worker_without_uvloop"


def logged(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The JSON log lines of a worker process."""
    log_path: Path = proc.log_path  # type: ignore[attr-defined]
    lines = log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and '"event"' in line]


def logged_loops(proc: subprocess.Popen[bytes]) -> list[dict[str, str]]:
    return [{"loop": e["loop"], "setting": e["setting"]} for e in logged(proc) if e["event"] == "worker.event_loop"]


@pytest.mark.parametrize(
    ("setting", "module", "expected"),
    [
        ("asyncio", "tests.support.probe_worker", "asyncio"),
        ("uvloop", "tests.support.probe_worker", "uvloop"),
        ("auto", "tests.support.probe_worker", "uvloop"),
        ("auto", WITHOUT_UVLOOP, "asyncio"),
    ],
    ids=["asyncio", "uvloop", "auto-installed", "auto-not-installed"],
)
async def test_a_worker_runs_a_chain_on_the_loop_the_setting_chooses(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    setting: str,
    module: str,
    expected: str,
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="tick", queue="tick", interval_seconds=1)
    proc = spawn_worker(cleanup_scope, ["tick"], settings, module=module, SCHEDULER_EVENT_LOOP=setting)
    try:

        async def two_runs() -> bool:
            return sum(1 for r in await control.runs("tick") if r["status"] == "succeeded") >= 2

        await wait_until(two_runs, 40, f"two runs on {expected}")
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert logged_loops(proc) == [{"loop": expected, "setting": setting}]
    frozen = [e for e in logged(proc) if e["event"] == "worker.heap_frozen"]  # a worker process freezes once up
    assert len(frozen) == 1 and frozen[0]["objects"] > 10_000


@pytest.mark.parametrize("setting", ["asyncio", "uvloop"])
async def test_the_control_plane_serves_on_the_loop_the_setting_chooses(
    settings: Settings, cleanup_scope: str, tmp_path: Path, setting: str
) -> None:
    port = free_port()
    proc = spawn_server(cleanup_scope, port, settings, tmp_path, SCHEDULER_EVENT_LOOP=setting)
    try:
        health = await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{port}", proc)
        assert health["status"] == "ok"
    finally:
        stop_process(proc)
    log = (tmp_path / f"serve-{cleanup_scope}.log").read_text()
    listening = [json.loads(line) for line in log.splitlines() if '"api.listening"' in line]
    assert [line["loop"] for line in listening] == [setting], log[-3000:]
