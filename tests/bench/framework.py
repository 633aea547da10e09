"""The framework under load: J one-second interval jobs, W worker processes, runs counted over a window.

Also what each run costs: worker CPU from the OS, PostgreSQL round trips and statements and RabbitMQ messages
counted inside the workers (tests.bench.counters), peak RSS per worker.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import Settings
from tests.bench import procs, scopes, servers
from tests.bench.measure import Outcome, Window, expected_slots, read_runs, split_lateness
from tests.bench.procs import Proc

QUEUE = "bench"


@dataclass(frozen=True)
class Load:
    jobs: int
    workers: int
    herd: bool
    duration: float
    warmup: float = 5.0
    drain: float = 3.0

    @property
    def mode(self) -> str:
        return "herd" if self.herd else "spread"

    @property
    def name(self) -> str:
        return f"framework-{self.mode}-j{self.jobs}-w{self.workers}"


def start_workers(
    settings: Settings,
    scope: str,
    count: int,
    work_dir: Path,
    code_root: Path,
    queues: str = QUEUE,
    ready_timeout: float = 120.0,
    **env: str,
) -> list[Proc]:
    workers = []
    for i in range(count):
        name = f"{scope}-worker{i}"
        worker_env = procs.base_env(
            settings,
            SCHEDULER_SCOPE=scope,
            BENCH_QUEUES=queues,
            BENCH_COUNTERS=str(work_dir / f"{name}.counters"),
            BENCH_RUNS=str(work_dir / f"{name}.runs"),
            **env,
        )
        workers.append(procs.spawn(name, ["-m", "tests.bench.worker"], worker_env, code_root, work_dir))
    for worker in workers:
        procs.wait_logged(worker, '"worker.ready"', ready_timeout)
    return workers


def counter_deltas(paths: list[Path], runs: int) -> dict[str, Any]:
    """Per run: the difference between the first two snapshots (window start and end) of each worker, summed."""
    totals: dict[str, float] = {}
    for path in paths:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        first, second = lines[0], lines[1]
        for key, value in second.items():
            if key in ("time", "pid"):
                continue
            totals[key] = totals.get(key, 0) + value - first.get(key, 0)
    per_run = {f"{key}_per_run": round(value / runs, 3) for key, value in totals.items() if runs}
    return per_run


async def _server_xacts(settings: Settings) -> int:
    rows = await scopes.fetch(
        settings, "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(rows[0]["n"])


def run(settings: Settings, load: Load, work_dir: Path, code_root: Path, profile: Path | None = None) -> Outcome:
    """One load: start workers, seed, warm up, measure a window, drain, stop, read, clean up."""
    scope = scopes.new_scope()
    workers: list[Proc] = []
    try:
        autovacuum = asyncio.run(scopes.vacuum(settings))
        workers = start_workers(settings, scope, load.workers, work_dir, code_root)
        definitions = scopes.interval_jobs(load.jobs, queue=QUEUE, align=load.herd)
        seed_sec = asyncio.run(scopes.seed(settings, scope, definitions))
        time.sleep(load.warmup)
        profiler = _start_profiler(workers[0], load, profile)
        xacts_before = asyncio.run(_server_xacts(settings))
        prefixes = [f"bench-{socket.gethostname()}-{w.pid}-" for w in workers]
        server_cpu = servers.ServerCpu()
        server_cpu.start(asyncio.run(servers.backend_pids(settings, prefixes)))
        window = Window.open(workers)
        for worker in workers:
            worker.signal(signal.SIGUSR1)
        window.close(workers, load.duration)
        server_cpu.stop(asyncio.run(servers.backend_pids(settings, prefixes)))
        for worker in workers:
            worker.signal(signal.SIGUSR1)
        xacts = asyncio.run(_server_xacts(settings)) - xacts_before
        time.sleep(load.drain)
        peaks = [worker.peak_rss_mb() for worker in workers]
        for worker in workers:
            worker.stop()
        if profiler is not None:
            profiler.wait(60)
        runs = read_runs([work_dir / f"{w.name}.runs" for w in workers])
        statuses = asyncio.run(scopes.status_counts(settings, scope, window.start, window.end))
        expected = expected_slots(load.jobs, window)
        outcome = Outcome("framework", load.jobs, load.workers, load.mode, window, runs, expected)
        in_window = sum(1 for r in runs if window.start <= r[1] < window.end)
        outcome.extra = {
            "seed_sec": round(seed_sec, 2),
            "server_autovacuum": autovacuum,
            "statuses": statuses,
            "peak_rss_mb": peaks,
            "server_xacts_per_run": round(xacts / in_window, 2) if in_window else None,
            **server_cpu.per_1000(in_window),
            **split_lateness([work_dir / f"{w.name}.runs" for w in workers], window.start, window.end),
            **counter_deltas([work_dir / f"{w.name}.counters" for w in workers], in_window),
        }
        return outcome
    finally:
        for worker in workers:
            if worker.popen.poll() is None:
                worker.kill()
        asyncio.run(scopes.cleanup(settings, scope))


def _start_profiler(worker: Proc, load: Load, out: Path | None) -> Any:
    """py-spy on the first worker for the length of the window (sampling from outside, non-blocking)."""
    if out is None:
        return None
    import shutil
    import subprocess

    py_spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).with_name("py-spy"))
    argv = [py_spy, "record", "--pid", str(worker.pid), "--duration", str(int(load.duration)), "--rate", "250",
            "--nonblocking", "--gil", "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
