"""The HA soak of tests.chaos (`make chaos-ha`), bounded to a few minutes: a private three-node RabbitMQ cluster
with quorum queues, a PostgreSQL primary with a synchronous standby, two of the three workers with their clocks 2 s
ahead and 2 s behind (libfaketime); every HA fault once (node kill -9, the delay queues' leader killed,
stop_app/start_app, a rolling restart, a node SIGSTOPped, a PostgreSQL switchover, worker kill, connections closed,
database sessions killed) beside control storms, and the same checker. Each fault once, back to back (`--once`:
the 400 s are only a limit; in a loaded `make test` on a slow machine the faults took more than 200 s), with every
down time at 0.3 of `make chaos-ha`'s (`--down-scale`: a node killed is started again after 1-2.4 s, not 3-8 s) and
the node frozen 6 s (20 s there): what is left is mostly the time RabbitMQ nodes take to boot (the cluster, two
node restarts, a rolling restart of three) and the 25 s quiet end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.ha_faults import HA_FAULTS
from tests.chaos.soak import FAKETIME_LIB

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_a_short_ha_soak_runs_no_slot_twice_overlaps_nothing_and_loses_nothing(tmp_path: Path) -> None:
    assert FAKETIME_LIB.exists(), "Debian's faketime package is needed (make faketime)"
    out = tmp_path / "soak"
    argv = [
        sys.executable, "-m", "tests.chaos", "--ha", "--once", "--duration", "400", "--jobs", "13", "--settle", "25",
        "--quiet", "1,2", "--freeze", "6", "--down-scale", "0.3", "--seed", "11", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=840)
    report_path = out / "report.json"
    assert report_path.exists(), f"the soak did not get to the checker:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert result.returncode == 0 and report["ok"], (
        f"{json.dumps(report['violations'], indent=1)[:4000]}\n{(out / 'report.txt').read_text()[-4000:]}"
    )
    assert set(HA_FAULTS) <= set(report["faults"]), f"every kind of HA fault was injected: {report['faults']}"
    totals = report["totals"]
    assert totals["ran"] > 150 and totals["ran_twice"] == totals["overlaps"] == totals["lost"] == 0
    starts = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    skews = {e["detail"].get("clock_skew_sec") for e in starts if e["kind"] == "worker_start"}
    assert {2.0, -2.0} <= skews, "two workers ran with skewed clocks"
