"""The compose targets of the Makefile refuse bad input with one line and exit code 2, before anything runs:
an unknown profile, a missing env file, no Docker engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("make"), "make is needed to run the Makefile"
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip() and "Entering" not in line]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("target", ["up", "ctl", "ps", "logs", "compose-seed"])
def test_an_unknown_profile_is_one_line(target: str) -> None:
    assert "unknown PROFILE 'staging': use one of: mock real" in one_error_line(make(target, "PROFILE=staging"))


@pytest.mark.parametrize("target", ["up", "ctl", "compose-seed"])
def test_a_missing_env_file_is_one_line(target: str, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.env"
    line = one_error_line(make(target, "PROFILE=mock", f"ENV_FILE={missing}"))
    assert f"{missing} is missing: cp deploy/.env.example {missing}" in line


def compose_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(compose_available(), reason="`docker compose` works here: nothing to refuse")
def test_no_docker_engine_is_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / "present.env"
    env_file.write_text("")
    line = one_error_line(make("ctl", "PROFILE=real", f"ENV_FILE={env_file}", "ARGS=status"))
    assert "no 'docker compose' here" in line
