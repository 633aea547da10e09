"""The wheel (`pip wheel .`, what the image installs) carries every file of the packages, not only the Python:
migrations, the Admin UI's templates, htmx and its licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_non_python_file_of_the_packages_is_in_the_wheel(tmp_path: Path) -> None:
    leftover = not (ROOT / "build").exists()  # setuptools builds in ./build: removed after, unless it was there
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "shared", "services", "scheduler_seed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    data = [f for f in tracked if not f.endswith(".py")]
    assert "scheduler_seed/server/static/htmx.min.js" in data
    assert "shared/store/migrations/0005_expected_period.sql" in data
    assert [f for f in data if f not in names] == []
