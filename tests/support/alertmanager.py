"""A real Alertmanager for tests (Debian's `prometheus-alertmanager`), on free ports with temporary storage,
and a local webhook receiver that records what it is sent."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.standins import Answer, Request, StandIn

INSTALL_HINT = "install Debian's prometheus-alertmanager package: apt-get install -y prometheus-alertmanager"


def alertmanager_binary() -> Path:
    for candidate in (shutil.which("prometheus-alertmanager"), shutil.which("alertmanager")):
        if candidate:
            return Path(candidate)
    raise RuntimeError(f"prometheus-alertmanager not found; {INSTALL_HINT}")


class WebhookReceiver(StandIn):
    """Records every `POST /alerts` body (Alertmanager's webhook payload) and answers 200."""

    def answer(self, request: Request) -> Answer:
        return Answer.json({"ok": True}) if request.method == "POST" else Answer(404)

    def notifications(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("POST", "/alerts") if isinstance(r.body, dict)]


@contextlib.contextmanager
def running_alertmanager(config_yaml: str, timeout: float = 60) -> Iterator[str]:
    """Alertmanager with `config_yaml` on a free port (clustering off); yields its URL."""
    binary = alertmanager_binary()
    with tempfile.TemporaryDirectory(prefix="alertmanager-") as tmp:
        root = Path(tmp)
        config = root / "alertmanager.yml"
        config.write_text(config_yaml)
        port = free_port()
        log_path = root / "alertmanager.log"
        argv = [
            str(binary),
            f"--config.file={config}",
            f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"alertmanager exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"alertmanager not ready after {timeout} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
