"""`python -m tests.chaos.replication_loss [--seconds S] [--writers N]`: what a standby promoted after the primary's
machine died holds, with synchronous and with asynchronous replication.

Writers insert run-like rows into the primary as fast as they can and count every commit PostgreSQL acknowledged;
then the primary dies at once (every process of it SIGSTOPped, then SIGKILLed: nothing more leaves it), the standby
is promoted and the acknowledged rows missing on it are counted. Synchronous: 0 by construction (a commit returns
once the standby flushed it). Asynchronous: whatever was in flight, which is what a switchover on such a standby
would forget (a run recorded as succeeded, then gone: its slot would run again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
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


async def measure(synchronous: bool, seconds: float, writers: int) -> dict[str, Any]:
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
        }
    finally:
        pair.remove()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.replication_loss", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of writes before the crash")
    p.add_argument("--writers", type=int, default=8, help="concurrent writing sessions")
    p.add_argument("--rounds", type=int, default=3, help="crashes per replication mode")
    args = p.parse_args()
    results = [
        asyncio.run(measure(sync, args.seconds, args.writers)) for _ in range(args.rounds) for sync in (True, False)
    ]
    for result in results:
        print(json.dumps(result))
    sys.exit(1 if any(r["missing_on_promoted_standby"] for r in results if r["replication"] == "synchronous") else 0)


if __name__ == "__main__":
    main()
