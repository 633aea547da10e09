"""Processes under test: start them with an environment, wait until ready, read their CPU and peak memory
from the OS, stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def base_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@dataclass
class Proc:
    """A process under test, its log, and the CPU seconds read at marks."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    marks: list[tuple[float, float]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process and its live children, from the OS."""
        user = system = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            user += times.user
            system += times.system
        return user, system

    def cpu_sec(self) -> float:
        return sum(self.cpu_times())

    def mark(self) -> None:
        self.marks.append(self.cpu_times())

    def peak_rss_mb(self) -> float:
        """Peak resident set (VmHWM) of the process tree's largest member, in MiB."""
        peak = 0
        for proc in self.tree():
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        return round(peak / 1024, 1)

    def rss_mb(self) -> float:
        total = 0
        for proc in self.tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return round(total / 2**20, 1)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, SIGKILL the tree if it does not end in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_children()
        return self.popen.returncode

    def kill(self) -> None:
        children = self.tree()[1:]
        if self.popen.poll() is None:
            self.popen.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.popen.wait(10)

    def _reap_children(self) -> None:
        for child in self.tree()[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def spawn(name: str, argv: Sequence[str], env: dict[str, str], cwd: Path, log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, *argv], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log_path)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, procs: Sequence[Proc] = ()) -> None:
    """Poll until `predicate()`; fail early with the log tail of a process that died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in procs:
            if proc.popen.poll() is not None:
                tail = proc.log_text()[-2000:]
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before {what}: {tail}")
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def wait_logged(proc: Proc, needle: str, timeout: float) -> None:
    wait_for(lambda: needle in proc.log_text(), timeout, f"{proc.name}: {needle}", [proc])
