"""`python -m tests.bench --quick` end to end: every section runs and writes its JSON, Markdown and PNG.

The quick run's scenarios run side by side on a handful of jobs, so its numbers mean nothing: this test checks
that the benchmark still works and that its output is complete and consistent, never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"framework", "broker", "apscheduler", "celery"}


def run_quick(settings: Settings, out: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_EVENT_LOOP": "uvloop",  # its C transports: the counters must still see every PostgreSQL write
    }
    argv = [sys.executable, "-m", "tests.bench", "--quick", "--out", str(out)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False)


def test_quick_bench_writes_results_table_and_plot(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = run_quick(settings, out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["quick"] is True and results["meta"]["cores"] >= 1
    assert results["meta"]["event_loop"] == "uvloop"
    assert {row["system"] for row in results["herd"] + results["peers"]} == SYSTEMS
    samples = json.loads((out / "samples.json").read_text())
    for section in ("lateness", "herd", "peers", "scale"):
        assert results[section], section
        for row in results[section]:
            assert 0 < row["done"] <= row["expected"], row
            assert row["lateness_ms"]["count"] == len(samples[row["samples_key"]]) > 0, row
            if row["system"] == "framework":
                assert row["duplicates"] == 0, row  # no slot ever runs twice, under any load
    lateness = results["lateness"][0]
    assert lateness["pg_round_trips_per_run"] > 0 and lateness["amqp_publishes_per_run"] > 0
    assert {r["scenario"].split()[0] for r in results["recovery"]} == {"kill", "lost"}

    table = (out / "results.md").read_text()
    for title in ("## Lateness and throughput", "## Side by side", "## Scale of the job table", "## Recovery"):
        assert title in table
    png = (out / "lateness.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
