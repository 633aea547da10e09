"""Scale of the job table: N registered jobs, most hourly or daily, a few fast ones among them.

Seeded with the real seeder (`python -m scheduler_seed seed --file`), then served by one worker process for a
window. Reports seed time, the worker's start-up time (it declares every job's queues), RabbitMQ memory and
queue count, the scope's bytes in PostgreSQL, the worker's memory and CPU, and the lateness of the fast jobs.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from shared.settings import Settings
from tests.bench import procs, scopes, servers
from tests.bench.framework import start_workers
from tests.bench.measure import Outcome, Window, read_runs

FAST_JOBS = 10
SLOW_QUEUES = 10


def jobs_toml(total: int) -> str:
    """`FAST_JOBS` one-second jobs on queue `fast`; the rest alternate hourly intervals and daily crons over
    `SLOW_QUEUES` shared queues (a scope of many services, each with many jobs)."""
    lines = []
    for i in range(total):
        job_id = f"j{i:05d}"
        lines.append(f"[jobs.{job_id}]")
        if i < FAST_JOBS:
            lines += ['queue = "fast"', "interval_seconds = 1"]
        elif i % 2:
            lines += [f'queue = "s{i % SLOW_QUEUES}"', "interval_seconds = 3600"]
        else:
            lines += [f'queue = "s{i % SLOW_QUEUES}"', f'cron_expr = "{i % 60} {i % 24} * * *"']
        lines.append("")
    return "\n".join(lines)


def queues() -> str:
    return ",".join(["fast", *(f"s{i}" for i in range(SLOW_QUEUES))])


def rabbitmq_rss_mb() -> float:
    pid = servers.rabbitmq_pid()
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1) if pid else float("nan")


def rabbitmq_queue_count(scope: str) -> int:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    return sum(1 for line in out.splitlines() if line.startswith(f"{scope}."))


async def postgres_bytes(settings: Settings, scope: str) -> int:
    rows = await scopes.fetch(
        settings,
        "SELECT (SELECT coalesce(sum(pg_column_size(j.*)), 0) FROM scheduler.jobs j WHERE scope = $1)"
        " + (SELECT coalesce(sum(pg_column_size(r.*)), 0) FROM scheduler.job_runs r WHERE scope = $1) AS n",
        scope,
    )
    return int(rows[0]["n"])


def seed_with_cli(settings: Settings, scope: str, path: Path, code_root: Path, work_dir: Path) -> float:
    env = procs.base_env(settings, SCHEDULER_SCOPE=scope)
    started = time.monotonic()
    with (work_dir / f"{scope}-seed.log").open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "scheduler_seed", "seed", "--scope", scope, "--file", str(path)],
            cwd=code_root, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"seed failed ({done.returncode}): see {work_dir / f'{scope}-seed.log'}")
    return time.monotonic() - started


def run(settings: Settings, total: int, duration: float, warmup: float, work_dir: Path, code_root: Path) -> Outcome:
    scope = scopes.new_scope()
    path = work_dir / f"{scope}-jobs.toml"
    path.write_text(jobs_toml(total))
    rss_before = rabbitmq_rss_mb()
    worker = None
    try:
        seed_sec = seed_with_cli(settings, scope, path, code_root, work_dir)
        rss_after_seed = rabbitmq_rss_mb()
        queue_count = rabbitmq_queue_count(scope)
        started = time.monotonic()
        # it declares the queues of every job it serves before it is ready: minutes for a big scope
        worker = start_workers(settings, scope, 1, work_dir, code_root, queues=queues(), ready_timeout=1800)[0]
        ready_sec = time.monotonic() - started
        time.sleep(warmup)
        window = Window.open([worker])
        worker.signal(signal.SIGUSR1)
        window.close([worker], duration)
        worker.signal(signal.SIGUSR1)
        time.sleep(2.0)
        rss, peak = worker.rss_mb(), worker.peak_rss_mb()
        worker.stop()
        runs = [r for r in read_runs([work_dir / f"{worker.name}.runs"]) if int(r[0][1:]) < FAST_JOBS]
        pg_bytes = asyncio.run(postgres_bytes(settings, scope))
        outcome = Outcome("framework", FAST_JOBS, 1, "scale", window, runs, FAST_JOBS * round(duration))
        outcome.extra = _extra(total, seed_sec, ready_sec, rss_before, rss_after_seed, queue_count, pg_bytes, rss, peak)
        return outcome
    finally:
        if worker is not None and worker.popen.poll() is None:
            worker.kill()
        asyncio.run(scopes.cleanup(settings, scope))


def _extra(
    total: int, seed_sec: float, ready_sec: float, rss_before: float, rss_after: float, queue_count: int,
    pg_bytes: int, rss: float, peak: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "registered_jobs": total,
        "seed_sec": round(seed_sec, 1),
        "worker_ready_sec": round(ready_sec, 1),
        "rabbitmq_rss_delta_mb": round(rss_after - rss_before, 1),
        "rabbitmq_queues": queue_count,
        "postgres_row_bytes": pg_bytes,
        "worker_rss_mb": rss,
        "peak_rss_mb": [peak],
    }
