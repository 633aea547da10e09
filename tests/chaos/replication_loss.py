"""`python -m tests.chaos.replication_loss [--seconds S] [--writers N]`: what a standby promoted after the primary's
machine died holds, with synchronous and with asynchronous replication.

Writers insert run-like rows into the primary as fast as they can and count every commit PostgreSQL acknowledged;
the link to the standby stalls for `--lag` seconds (the primary's WAL sender SIGSTOPped: a network hiccup, a busy
standby), then the primary dies at once (every process of it SIGSTOPped, then SIGKILLed: nothing more leaves it), the
standby is promoted and the acknowledged rows missing on it are counted. Synchronous: 0 by construction (a commit
returns once the standby flushed it; during the stall commits wait). Asynchronous: whatever the standby had not
received, which is what a switchover on such a standby forgets (a run recorded as succeeded, then gone: its slot
could run again). With `--lag 0` the crash alone: on one machine the WAL sender ships within microseconds, so an
asynchronous standby rarely misses anything then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from tests.chaos.ha_servers import PgPair
from tests.chaos.servers import PrivatePostgres


def _processes_of(pg: PrivatePostgres) -> list[int]:
    """The postmaster and its children (backends, walsenders, background workers)."""
    assert pg.proc is not None
    root = pg.proc.pid
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            pids.append(int(stat.parent.name))
    return pids


def crash(pg: PrivatePostgres) -> None:
    """The machine dies: every process stopped at once, then killed."""
    pids = _processes_of(pg)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    assert pg.proc is not None
    pg.proc.wait(30)


async def _writer(dsn: str, stop: float, acked: list[int], base: int) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    n = 0
    try:
        while time.monotonic() < stop:
            await conn.execute("INSERT INTO loss_runs (id, status) VALUES ($1, 'succeeded')", base + n)
            acked.append(base + n)  # acknowledged: PostgreSQL said the commit is done
            n += 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pass  # the primary died under us: that commit was never acknowledged
    finally:
        conn.terminate()


def _stall_sender(pg: PrivatePostgres) -> int | None:
    """SIGSTOP the primary's WAL sender (the standby stops receiving; commits go on, or wait when synchronous)."""
    result = subprocess.run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-c",
         "SELECT pid FROM pg_stat_replication LIMIT 1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    pid = int(result.stdout.strip()) if result.stdout.strip().isdigit() else None
    if pid is not None:
        os.kill(pid, signal.SIGSTOP)
    return pid


async def measure(synchronous: bool, seconds: float, writers: int, lag: float = 0.5) -> dict[str, Any]:
    pair = PgPair(synchronous=synchronous)
    try:
        await asyncio.to_thread(pair.start)
        primary = pair.primary.dsn()
        setup = await asyncpg.connect(primary)
        await setup.execute("CREATE TABLE loss_runs (id bigint PRIMARY KEY, status text NOT NULL)")
        await setup.close()
        acked: list[int] = []
        stop = time.monotonic() + seconds
        tasks = [asyncio.create_task(_writer(primary, stop + 60, acked, i * 10_000_000)) for i in range(writers)]
        await asyncio.sleep(seconds)
        stalled = _stall_sender(pair.primary) if lag > 0 else None
        await asyncio.sleep(lag)
        crash(pair.primary)  # mid-stream: writers are still committing
        await asyncio.gather(*tasks)
        assert pair.standby is not None
        await asyncio.to_thread(pair._promote, pair.standby)
        conn = await asyncpg.connect(pair.standby.dsn())
        present = {r["id"] for r in await conn.fetch("SELECT id FROM loss_runs")}
        await conn.close()
        missing = [a for a in acked if a not in present]
        return {
            "replication": "synchronous" if synchronous else "asynchronous",
            "acknowledged_commits": len(acked),
            "missing_on_promoted_standby": len(missing),
            "writers": writers,
            "seconds": seconds,
            "link_stalled_sec": lag if stalled else 0,
        }
    finally:
        pair.remove()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.replication_loss", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of writes before the crash")
    p.add_argument("--writers", type=int, default=8, help="concurrent writing sessions")
    p.add_argument("--rounds", type=int, default=3, help="crashes per replication mode")
    p.add_argument("--lag", type=float, default=0.5, help="seconds the standby link stalls before the crash")
    args = p.parse_args()
    results = [
        asyncio.run(measure(sync, args.seconds, args.writers, args.lag))
        for _ in range(args.rounds)
        for sync in (True, False)
    ]
    for result in results:
        print(json.dumps(result))
    sys.exit(1 if any(r["missing_on_promoted_standby"] for r in results if r["replication"] == "synchronous") else 0)


if __name__ == "__main__":
    main()
