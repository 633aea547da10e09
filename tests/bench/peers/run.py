"""Running the baselines the same way as the framework: the broker's own hop, APScheduler and Celery beat.

Each is a real process (Celery: beat plus a prefork worker) started with J one-second jobs; its runs are read
back from its files, lateness is start minus intended slot, CPU is read from the OS over the same kind of window.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shared.settings import Settings
from tests.bench import procs, scopes, servers
from tests.bench.measure import Outcome, Window, expected_slots, read_runs
from tests.bench.procs import Proc


def _wait_ready(proc: Proc, ready: Path, timeout: float = 120) -> None:
    procs.wait_for(ready.exists, timeout, f"{proc.name} ready", [proc])


def broker(
    settings: Settings, jobs: int, herd: bool, duration: float, warmup: float, work_dir: Path, code_root: Path
) -> Outcome:
    """The broker alone: TTL -> dead-letter -> consumer, no database, no framework."""
    scope = scopes.new_scope()
    mode = "herd" if herd else "spread"
    name = f"{scope}-broker"
    ready, runs_path = work_dir / f"{name}.ready", work_dir / f"{name}.runs"
    stop_at = time.time() + warmup + duration + 60  # generous: the window is measured from ready on
    argv = ["-m", "tests.bench.broker", "--scope", scope, "--jobs", str(jobs), "--stop-at", str(stop_at),
            "--ready", str(ready), "--runs", str(runs_path)] + (["--align"] if herd else [])  # fmt: skip
    proc = procs.spawn(name, argv, procs.base_env(settings), code_root, work_dir)
    try:
        _wait_ready(proc, ready)
        return _measure(proc, "broker", jobs, 1, mode, duration, warmup, runs_path)
    finally:
        proc.stop()
        job_ids = [f"j{i:04d}" for i in range(jobs)]
        asyncio.run(scopes.cleanup(settings, scope, job_ids=job_ids, queues=["bench"]))


def apscheduler(
    settings: Settings, jobs: int, duration: float, warmup: float, work_dir: Path, code_root: Path
) -> Outcome:
    """APScheduler 3.11 AsyncIOScheduler, J interval jobs in one process (all on one grid: a herd)."""
    name = f"aps-j{jobs}-{time.monotonic_ns()}"
    ready, runs_path = work_dir / f"{name}.ready", work_dir / f"{name}.runs"
    stop_at = time.time() + warmup + duration + 60
    argv = ["-m", "tests.bench.peers.aps", "--jobs", str(jobs), "--stop-at", str(stop_at), "--ready", str(ready),
            "--runs", str(runs_path)]  # fmt: skip
    proc = procs.spawn(name, argv, procs.base_env(settings), code_root, work_dir)
    try:
        _wait_ready(proc, ready)
        return _measure(proc, "apscheduler", jobs, 1, "herd", duration, warmup, runs_path)
    finally:
        proc.stop()


def celery(settings: Settings, jobs: int, duration: float, warmup: float, work_dir: Path, code_root: Path) -> Outcome:
    """Celery 5 beat + one prefork worker (2 processes) on the same RabbitMQ, J periodic tasks every second."""
    scope = scopes.new_scope()
    runs_dir = work_dir / f"{scope}-celery-runs"
    runs_dir.mkdir()
    env = procs.base_env(settings, BENCH_SCOPE=scope, BENCH_JOBS=str(jobs), BENCH_RUNS_DIR=str(runs_dir))
    app = "tests.bench.peers.celery_app"
    worker_argv = ["-m", "celery", "-A", app, "worker", "--pool=prefork", "--concurrency=2", "--without-gossip",
                   "--without-mingle", "--without-heartbeat", "--loglevel=WARNING", "-n", f"{scope}@%h"]  # fmt: skip
    beat_argv = ["-m", "celery", "-A", app, "beat", "-S", f"{app}:SlotStampingScheduler", "--loglevel=WARNING",
                 "-s", str(work_dir / f"{scope}-beat-schedule")]  # fmt: skip
    worker = procs.spawn(f"{scope}-celery-worker", worker_argv, env, code_root, work_dir)
    beat: Proc | None = None
    try:
        procs.wait_for(lambda: len(worker.tree()) >= 3, 120, "celery pool processes", [worker])
        time.sleep(2.0)  # the pool is up; give the consumer a moment to attach before beat starts sending
        beat = procs.spawn(f"{scope}-celery-beat", beat_argv, env, code_root, work_dir)
        outcome = _measure_many([worker, beat], "celery", jobs, duration, warmup, runs_dir)
        return outcome
    finally:
        if beat is not None:
            beat.stop()
        worker.stop()
        queue = f"{scope}.celery"
        asyncio.run(scopes.cleanup(settings, scope, extra_queues=[queue], extra_exchanges=[queue]))


def _measure(
    proc: Proc, system: str, jobs: int, workers: int, mode: str, duration: float, warmup: float, runs_path: Path
) -> Outcome:
    time.sleep(warmup)
    broker_cpu = servers.ServerCpu()
    broker_cpu.start([])
    window = Window.open([proc])
    window.close([proc], duration)
    broker_cpu.stop([])
    time.sleep(2.0)
    peak = proc.peak_rss_mb()
    proc.stop()
    outcome = Outcome(system, jobs, workers, mode, window, read_runs([runs_path]), expected_slots(jobs, window))
    outcome.extra = {"peak_rss_mb": [peak], **_rabbitmq_cpu(broker_cpu, outcome)}
    return outcome


def _rabbitmq_cpu(broker_cpu: servers.ServerCpu, outcome: Outcome) -> dict[str, float | None]:
    runs = sum(1 for r in outcome.runs if outcome.window.start <= r[1] < outcome.window.end)
    return {"rabbitmq_cpu_sec_per_1000_runs": broker_cpu.per_1000(runs)["rabbitmq_cpu_sec_per_1000_runs"]}


def _measure_many(group: list[Proc], system: str, jobs: int, duration: float, warmup: float, runs_dir: Path) -> Outcome:
    def started() -> bool:
        return any(path.stat().st_size for path in runs_dir.glob("*.jsonl"))

    procs.wait_for(started, 120, f"{system}: a first run", group)
    time.sleep(warmup)
    broker_cpu = servers.ServerCpu()
    broker_cpu.start([])
    window = Window.open(group)
    window.close(group, duration)
    broker_cpu.stop([])
    time.sleep(2.0)
    peaks = [proc.peak_rss_mb() for proc in group]
    for proc in group:
        proc.stop()
    runs = read_runs(sorted(runs_dir.glob("*.jsonl")))
    outcome = Outcome(system, jobs, 1, "herd", window, runs, expected_slots(jobs, window))
    outcome.extra = {"peak_rss_mb": peaks, **_rabbitmq_cpu(broker_cpu, outcome)}
    return outcome
