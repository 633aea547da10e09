"""CPU the servers spend on a scenario, read from the OS: RabbitMQ's node (shared with anything else using the
broker meanwhile) and the PostgreSQL backends of the workers under test (found by their application_name)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import psutil

from shared.settings import Settings
from tests.bench import scopes


def _cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def rabbitmq_pid() -> int | None:
    """The RabbitMQ node's VM: BENCH_RABBITMQ_PID when set (a private node beside the shared one), else the first
    beam.smp running rabbit."""
    if os.environ.get("BENCH_RABBITMQ_PID"):
        return int(os.environ["BENCH_RABBITMQ_PID"])
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "beam.smp" and any("rabbit" in part for part in cmdline):
            return proc.pid
    return None


async def backend_pids(settings: Settings, application_prefixes: Sequence[str]) -> list[int]:
    rows = await scopes.fetch(
        settings,
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE ANY($1::text[])",
        [f"{prefix}%" for prefix in application_prefixes],
    )
    return [r["pid"] for r in rows]


class ServerCpu:
    """CPU seconds of the broker and of the workers' backends between `start` and `stop`."""

    def __init__(self) -> None:
        self.rabbit = rabbitmq_pid()
        self.rabbit_start = 0.0
        self.backends: dict[int, float] = {}
        self.rabbitmq_sec = 0.0
        self.postgres_sec = 0.0

    def start(self, backends: Sequence[int]) -> None:
        self.rabbit_start = _cpu(self.rabbit) if self.rabbit else 0.0
        self.backends = {pid: _cpu(pid) for pid in backends}

    def stop(self, backends: Sequence[int]) -> None:
        self.rabbitmq_sec = (_cpu(self.rabbit) - self.rabbit_start) if self.rabbit else 0.0
        self.postgres_sec = sum(_cpu(pid) - self.backends.get(pid, 0.0) for pid in set(backends) | set(self.backends))

    def per_1000(self, runs: int) -> dict[str, float | None]:
        if not runs:
            return {"rabbitmq_cpu_sec_per_1000_runs": None, "postgres_cpu_sec_per_1000_runs": None}
        return {
            "rabbitmq_cpu_sec_per_1000_runs": round(self.rabbitmq_sec / runs * 1000, 3),
            "postgres_cpu_sec_per_1000_runs": round(self.postgres_sec / runs * 1000, 3),
        }
