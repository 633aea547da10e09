"""Recovery: how long the framework takes to come back from losing its only worker, and from losing a chain.

1. `kill -9` of the only worker, a new worker started at once: time to the new worker's first run, and
   whether any slot of the gap was lost (its messages wait in the queues; late slots run late, once).
2. A lost chain (the job's delay queue purged while it holds the next slot, as when a message is lost while
   dead-lettering): time until the watchdog has reseeded it and the job runs again. It waits, by design, until
   the chain is overdue by CHAIN_LOST_AFTER_SEC; the bench sets it (and the watchdog's pass period) low and
   also reports the time from "overdue by CHAIN_LOST_AFTER_SEC" to the next run.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aio_pika

from shared import topology
from shared.settings import Settings
from tests.bench import procs, scopes
from tests.bench.framework import start_workers
from tests.bench.measure import read_runs

JOBS = 10


async def _slots_since(settings: Settings, scope: str, since: float) -> dict[str, int]:
    rows = await scopes.fetch(
        settings,
        "SELECT status, count(*) AS n FROM scheduler.job_runs WHERE scope = $1 AND attempt = 1"
        " AND scheduled_for >= to_timestamp($2) AND scheduled_for < now() - interval '2 seconds' GROUP BY status",
        scope,
        since,
    )
    return {r["status"]: r["n"] for r in rows}


def kill_and_restart(settings: Settings, work_dir: Path, code_root: Path, warmup: float) -> dict[str, Any]:
    scope = scopes.new_scope()
    workers = []
    try:
        workers = start_workers(settings, scope, 1, work_dir, code_root)
        asyncio.run(scopes.seed(settings, scope, scopes.interval_jobs(JOBS)))
        time.sleep(warmup)
        killed_at = time.time()
        workers[0].popen.send_signal(signal.SIGKILL)
        workers[0].popen.wait(10)
        workers += start_workers(settings, scope, 1, work_dir, code_root)
        ready_at = time.time()
        time.sleep(5.0)
        workers[1].stop()
        runs = read_runs([work_dir / f"{workers[1].name}.runs"])
        first = min(started for _, _, started, _ in runs) if runs else float("nan")
        statuses = asyncio.run(_slots_since(settings, scope, killed_at - 1.0))
        return {
            "scenario": "kill -9 of the only worker, restart at once",
            "restart_to_ready_sec": round(ready_at - killed_at, 2),
            "kill_to_next_run_sec": round(first - killed_at, 2),
            "slots_since_kill_by_status": statuses,
        }
    finally:
        for worker in workers:
            if worker.popen.poll() is None:
                worker.kill()
        asyncio.run(scopes.cleanup(settings, scope))


async def _purge_next_message(settings: Settings, scope: str, job_id: str, timeout: float = 30) -> float:
    """Purge the job's delay queue at a moment it holds the chain's next message; returns when (unix time)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.delay_queue_name(scope, job_id), ensure=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            purged = await queue.purge()
            if purged.message_count == 1:
                return time.time()
            await asyncio.sleep(0.05)
        raise TimeoutError("the delay queue never held the chain's message")
    finally:
        await connection.close()


def lost_chain(
    settings: Settings, work_dir: Path, code_root: Path, warmup: float, lost_after: float, watchdog_every: float
) -> dict[str, Any]:
    scope = scopes.new_scope()
    workers = []
    env = {"CHAIN_LOST_AFTER_SEC": str(lost_after), "WATCHDOG_INTERVAL_SEC": str(watchdog_every)}
    try:
        workers = start_workers(settings, scope, 1, work_dir, code_root, **env)
        asyncio.run(scopes.seed(settings, scope, scopes.interval_jobs(1)))
        time.sleep(warmup)
        purged_at = asyncio.run(_purge_next_message(settings, scope, "j0000"))
        due = asyncio.run(scopes.fetch(settings, "SELECT next_due_at FROM scheduler.jobs WHERE scope = $1", scope))
        due_at = due[0]["next_due_at"].timestamp()
        procs.wait_for(lambda: _ran_after_reseed(workers[0]), lost_after + 10 * watchdog_every + 30, "reseed")
        reseeds = asyncio.run(_reseeded_at(settings, scope))
        workers[0].stop()
        runs = read_runs([work_dir / f"{workers[0].name}.runs"])
        first = min(started for _, _, started, _ in runs if started > purged_at)
        return {
            "scenario": "lost chain (delay queue purged), watchdog reseed",
            "chain_lost_after_sec": lost_after,
            "watchdog_interval_sec": watchdog_every,
            "lost_to_next_run_sec": round(first - purged_at, 2),
            "overdue_to_next_run_sec": round(first - due_at - lost_after, 2),
            "reseeds": reseeds,
        }
    finally:
        for worker in workers:
            if worker.popen.poll() is None:
                worker.kill()
        asyncio.run(scopes.cleanup(settings, scope))


def _ran_after_reseed(worker: procs.Proc) -> bool:
    """A run finished after the watchdog reseeded the overdue chain (a reseed of a job whose chain the seeder had
    not started yet, `never_seeded`, can come first: it is not the one waited for)."""
    events = [json.loads(line) for line in worker.log_text().splitlines() if line.startswith("{")]
    reseeded = next(
        (n for n, e in enumerate(events) if e.get("event") == "chain.reseeded" and e.get("reason") == "overdue"), None
    )
    return reseeded is not None and any(e.get("event") == "run.finished" for e in events[reseeded:])


async def _reseeded_at(settings: Settings, scope: str) -> int:
    rows = await scopes.fetch(settings, "SELECT epoch FROM scheduler.jobs WHERE scope = $1", scope)
    return int(rows[0]["epoch"]) - 1 if rows else 0
