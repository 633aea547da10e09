"""The mock profile without Docker: the seeder command of the compose file, on deploy/jobs/mock.toml, then
every service process of the profile. Every job of the file gets runs, each served by its own service."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import yaml

from shared.jobsfile import load_jobs_file
from shared.settings import Settings
from tests.support.runtime import Control
from tests.support.service_process import service_env, service_process, wait_for_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = {"succeeded", "failed", "timed_out"}


def compose_services() -> dict[str, dict[str, object]]:
    return dict(yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"])


def seeder_command(scope: str) -> list[str]:
    """The seeder-mock command of the compose file, for another scope."""
    command = list(compose_services()["seeder-mock"]["command"])  # type: ignore[call-overload]
    command[command.index("--scope") + 1] = scope
    return [sys.executable if part == "python" else part for part in command]


def worker_modules() -> list[str]:
    return [
        str(s["command"][-1])  # type: ignore[index]
        for name, s in compose_services().items()
        if name.endswith("-mock") and not name.startswith("seeder-")
    ]


async def test_mock_profile_seeder_and_services_run_every_job_of_the_jobs_file(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await asyncio.to_thread(
        subprocess.run,
        seeder_command(scope),
        cwd=ROOT,
        env=service_env(settings, scope, "mock"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert seeded.returncode == 0, seeded.stderr
    jobs = [d.job_id for d in load_jobs_file(ROOT / "deploy" / "jobs" / "mock.toml")]
    stored = await pool.fetch("SELECT job_id FROM scheduler.jobs WHERE scope = $1", scope)
    assert {r["job_id"] for r in stored} == set(jobs)
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(service_process(module.removeprefix("services."), settings, scope, "mock"))
            for module in worker_modules()
        ]
        for job_id in jobs:
            await wait_for_process(procs[0], lambda j=job_id: _executed(control, j), 150, f"a run of {job_id}")
    rows = await control.runs()
    served = {(r["job_id"], r["worker"].split("-")[0]) for r in rows if r["worker"] and r["status"] in EXECUTED}
    owners = {job: {w for j, w in served if j == job} for job in jobs}
    assert all(len(workers) == 1 for workers in owners.values()), owners


async def _executed(control: Control, job_id: str) -> bool:
    return any(r["status"] in EXECUTED for r in await control.runs(job_id))
