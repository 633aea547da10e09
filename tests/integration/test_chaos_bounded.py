"""The soak of tests.chaos, bounded to about two minutes: 15 jobs (one event-triggered, two with catch-up policies),
every kind of fault once, back to back (`--once`: the 150 s are a limit, so a slow machine still injects every kind),
the same checker. It runs on a private RabbitMQ node and a private PostgreSQL
cluster (it restarts and breaks them), so the shared servers and every other suite are left alone.
`make chaos DURATION=300` is the long one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.faults import DEFAULT_KINDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_a_short_soak_with_every_kind_of_fault_runs_no_slot_twice_overlaps_nothing_and_loses_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "soak"
    argv = [
        sys.executable, "-m", "tests.chaos", "--once", "--duration", "150", "--jobs", "15", "--settle", "25",
        "--quiet", "3,6", "--pg-outage", "10,12", "--seed", "7", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=840)
    report_path = out / "report.json"
    assert report_path.exists(), f"the soak did not get to the checker:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert result.returncode == 0 and report["ok"], (
        f"{json.dumps(report['violations'], indent=1)[:4000]}\n{(out / 'report.txt').read_text()[-4000:]}"
    )
    assert set(DEFAULT_KINDS) <= set(report["faults"]), f"every kind of fault was injected: {report['faults']}"
    assert {"reseed", "pause", "resume", "set"} & set(report["faults"]), "and control actions"
    totals = report["totals"]
    assert totals["ran"] > 200 and totals["ran_twice"] == totals["overlaps"] == totals["lost"] == 0
    assert totals["no_ledger_row"] == 0  # the slot ledger names every due slot, the ones that did not run too
    (follower,) = report["events"].values()  # evt-12 runs on every success of plain-00
    assert follower["expected"] > 10 and follower["ran_twice"] == follower["lost"] == 0
