"""The soak's worker processes: start them, kill one with -9, start it again, stop them all.

Each process is `python -m tests.chaos.worker JOBS_FILE`, logs to its own file (unbuffered, so a kill -9
loses no line) and dies with the soak (PR_SET_PDEATHSIG). Start and stop are recorded in the fault log, so the
checker knows which process (by pid) ran when, and when a killed one died.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.faultlog import FaultLog
from tests.chaos.servers import die_with_parent

ROOT = Path(__file__).resolve().parents[2]

# The FAST settings of the runtime tests, with a chain-lost threshold that a 3 s job cannot reach by lateness.
WORKER_ENV = {
    "HEARTBEAT_SEC": "0.5",
    "WATCHDOG_INTERVAL_SEC": "1",
    "CHAIN_LOST_AFTER_SEC": "10",
    "SHUTDOWN_GRACE_SEC": "3",
    "DEPENDENCY_RETRY_MAX_SEC": "2",
    "LOG_LEVEL": "INFO",
    "METRICS_PORT": "0",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Slot:
    """One of the fleet's places; its process is replaced when it is killed and restarted."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0
    log_paths: list[Path] = field(default_factory=list)


class Fleet:
    def __init__(
        self,
        size: int,
        jobs_file: Path,
        out_dir: Path,
        env: dict[str, str],
        fault_log: FaultLog,
        slot_env: dict[int, dict[str, str]] | None = None,
    ) -> None:
        self.jobs_file = jobs_file
        self.slot_env = slot_env or {}  # per slot (a skewed clock)
        self.out_dir = out_dir
        self.env = {**os.environ, **WORKER_ENV, "CHAOS_EXEC_DIR": str(out_dir / "exec"), **env}
        self.fault_log = fault_log
        self.slots = [Slot(i) for i in range(size)]
        (out_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, slot: Slot) -> int:
        """Spawn the slot's process (from the main thread: the child dies with the thread that spawned it)."""
        slot.generation += 1
        path = self.out_dir / "logs" / f"worker-{slot.index}-{slot.generation}.log"
        slot.log_paths.append(path)
        with path.open("wb") as log:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.worker", str(self.jobs_file)],
                cwd=ROOT,
                env={**self.env, **self.slot_env.get(slot.index, {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        skew = self.slot_env.get(slot.index, {}).get("CHAOS_CLOCK_SKEW_SEC")
        extra = {} if skew is None else {"clock_skew_sec": float(skew)}
        self.fault_log.mark("worker_start", slot=slot.index, pid=slot.proc.pid, log=str(path), **extra)
        return slot.proc.pid

    def start_all(self) -> None:
        for slot in self.slots:
            self.start(slot)

    def kill(self, slot: Slot) -> int | None:
        """SIGKILL: no drain, no goodbye; PostgreSQL drops its locks, RabbitMQ requeues its unacked messages."""
        if slot.proc is None or slot.proc.poll() is not None:
            return None
        pid = slot.proc.pid
        slot.proc.kill()
        slot.proc.wait()
        return pid

    async def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every worker (they drain within SHUTDOWN_GRACE_SEC), SIGKILL what is left after `timeout`."""
        running = [s for s in self.slots if s.proc is not None and s.proc.poll() is None]
        self.fault_log.mark("workers_stopping", pids=[s.proc.pid for s in running if s.proc is not None])
        for slot in running:
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGTERM)
        for slot in running:
            assert slot.proc is not None
            try:
                await asyncio.to_thread(slot.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                await asyncio.to_thread(slot.proc.wait)
            self.fault_log.mark("worker_stop", slot=slot.index, pid=slot.proc.pid, code=slot.proc.returncode)

    def dead(self) -> list[Slot]:
        """Slots whose process exited on its own (not killed by the soak): a worker must never die of a fault."""
        return [s for s in self.slots if s.proc is not None and s.proc.poll() is not None]

    def log_files(self) -> list[Path]:
        return [p for s in self.slots for p in s.log_paths]
