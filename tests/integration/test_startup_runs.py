"""Startup runs: `run_on_startup` set at runtime, and SCHEDULER_RUN_IMMEDIATELY (off by default), each one run
per boot of the service however many replicas boot; a misspelt SCHEDULER_* variable is named at start."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared.settings import Settings
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, spawn_worker, stop_process, wait_until

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # scheduled, but never due during a test: every run here is a startup run


async def startup_runs(control: Control, job_id: str) -> int:
    return sum(1 for r in await control.runs(job_id) if r["trigger_source"] == "startup" and r["status"] == "succeeded")


async def test_run_immediately_posts_one_startup_run_per_scheduled_job_per_service_boot(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="hourly", queue="boot", cron_expr=YEARLY)  # scheduled, run_on_startup off
    await control.seed(job_id="by-hand", queue="boot", reschedule_mode="none")  # no schedule
    await control.seed(job_id="on-boot", queue="boot", reschedule_mode="none")
    await control.change("on-boot", run_on_startup=True)  # `set` at runtime, through Control.set

    # boot 1, the switch off (the default): only the job that asks for it runs
    async with running_worker(fast_settings(settings, scope), {"boot": (probe, ProbeParams)}) as worker:
        assert worker.settings.scheduler_run_immediately is False
        await wait_until(lambda: _at_least(control, "on-boot", 1), 30, "the run_on_startup job's startup run")
        await asyncio.sleep(1.0)  # time for a wrong startup message of the others to run too
    assert (await startup_runs(control, "hourly"), await startup_runs(control, "by-hand")) == (0, 0)

    # boot 2, two replicas with SCHEDULER_RUN_IMMEDIATELY=true (one with a misspelt variable beside it)
    replicas = [
        spawn_worker(scope, ["boot"], settings, SCHEDULER_RUN_IMMEDIATELY="true", SCHEDULER_RUN_IMEDIATELY="true"),
        spawn_worker(scope, ["boot"], settings, SCHEDULER_RUN_IMMEDIATELY="true"),
    ]
    try:
        await wait_until(lambda: _at_least(control, "hourly", 1), 60, "the scheduled job's startup run")
        await wait_until(lambda: _at_least(control, "on-boot", 2), 30, "the second boot's run_on_startup run")
        await asyncio.sleep(3.0)  # time for a second replica's (wrong) startup message to run too
    finally:
        for proc in replicas:
            stop_process(proc)
    assert await startup_runs(control, "hourly") == 1  # once per boot, not per replica
    assert await startup_runs(control, "on-boot") == 2  # once per boot: two boots
    assert await startup_runs(control, "by-hand") == 0  # the switch is for scheduled jobs only
    warned = log_of(replicas[0])
    assert "settings.unknown_variables" in warned
    assert "SCHEDULER_RUN_IMEDIATELY (did you mean SCHEDULER_RUN_IMMEDIATELY?)" in warned
    assert "settings.unknown_variables" not in log_of(replicas[1])


def log_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


async def _at_least(control: Control, job_id: str, n: int) -> bool:
    return await startup_runs(control, job_id) >= n
