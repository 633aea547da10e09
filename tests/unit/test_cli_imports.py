"""Every CLI verb starts fast: importing the CLI loads none of the control plane's server stack (FastAPI, uvicorn,
aiogram, Jinja2), which only `serve` needs. Under load that import cost seconds per command, enough for a run
to finish before `run-now` could see it running."""

from __future__ import annotations

import subprocess
import sys

from tests.support.runtime import ROOT

HEAVY = ("fastapi", "uvicorn", "aiogram", "jinja2", "starlette")


def heavy_modules_after(module: str) -> list[str]:
    """The heavy top-level packages loaded by importing `module` in a fresh interpreter."""
    probe = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return loaded.stdout.split()


def test_importing_the_cli_loads_no_server_stack() -> None:
    assert heavy_modules_after("scheduler_seed.cli") == []


def test_the_check_sees_a_heavy_import() -> None:
    assert "fastapi" in heavy_modules_after("scheduler_seed.server.app")
