"""`make demo` starts the control plane too, prints its URL, and stops it on the way out."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from shared.settings import Settings
from tests.support.api import ROOT
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_demo_serves_the_admin_ui_at_the_url_it_prints(settings: Settings, cleanup_scope: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "scheduler_seed.demo", "--scope", cleanup_scope, "--seconds", "8", "--workers", "1",
            "--port", str(port), "--refresh", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    seen = None
    deadline = time.monotonic() + 120  # a loaded machine takes a while to start the control plane
    while time.monotonic() < deadline and proc.poll() is None and seen is None:
        try:
            page = httpx.get(url, timeout=2)
            seen = page if page.status_code == 200 and "Jobs" in page.text else None
        except httpx.HTTPError:
            time.sleep(0.3)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert seen is not None, f"the Admin UI did not answer at {url}: {output[-2000:]}"
    assert f"control plane (Admin UI and API): {url}" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)  # stopped with the demo
