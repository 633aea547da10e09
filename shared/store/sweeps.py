"""Repository functions of the watchdog's sweeps: abandon runs of dead workers, close buffered slots that never came
back, and prune history (`prune_history` is the one retention rule: the watchdog and the maintenance service both
call it).

Run statuses are passed as parameters from `shared.vocabulary`; no statement spells one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.store import idempotency, partitions, workers
from shared.store.runs import ACTIVE_ROWS, ALIVE_SQL, RELEASED_CLAIM_GRACE_SEC, RunRow
from shared.vocabulary import ACTIVE, OWNED, RunStatus, sources

DEAD_WORKER_RETENTION_SEC = 86400.0
"""Rows of workers that died or stopped are kept this long (for `status` and post-mortems), then forgotten."""

# what RunRow.from_record reads
_RETURNING = ", ".join(
    f"r.{c}"
    for c in (
        "run_id", "scope", "job_id", "epoch", "trigger_source", "scheduled_for", "attempt", "status", "worker",
        "next_posted_for", "params",
    )
)  # fmt: skip

_ABANDON = f"""
    WITH dead AS (
        SELECT r.run_id FROM scheduler.job_runs r
        LEFT JOIN scheduler.workers w ON w.worker_id = r.worker
        WHERE r.scope = $1 AND r.{ACTIVE_ROWS} AND r.status = ANY($3::text[])
          AND CASE WHEN r.worker IS NULL THEN r.claimed_at < clock_timestamp() - make_interval(secs => $2)
                   ELSE w.worker_id IS NULL OR NOT {ALIVE_SQL.format(w="w")} END
        FOR UPDATE OF r SKIP LOCKED
    )
    UPDATE scheduler.job_runs r SET status = $4, finished_at = clock_timestamp(),
        error = CASE WHEN r.worker IS NULL THEN 'claim given back and not taken over'
                     ELSE 'worker ' || r.worker || ' died during the run' END
    FROM dead WHERE r.run_id = dead.run_id AND r.status = ANY($3::text[])
    RETURNING {_RETURNING}
"""


async def abandon_orphans(
    conn: asyncpg.Connection, scope: str, released_grace_sec: float = RELEASED_CLAIM_GRACE_SEC
) -> list[RunRow]:
    """Mark claimed/running rows whose worker is dead as abandoned; returns them (the watchdog retries some).

    A claim given back (`runs.release_claim`, no worker) is left alone for `released_grace_sec`: its message went
    back to the queue and a copy normally takes the slot over within moments (after a broker restart, once it is
    back). Abandoned at once, the slot would be recorded as not run although its message was on its way.
    """
    records = await conn.fetch(_ABANDON, scope, released_grace_sec, sources(OWNED), RunStatus.ABANDONED.value)
    rows = [RunRow.from_record(r) for r in records]
    for row in rows:
        await conn.execute(
            "UPDATE scheduler.jobs SET last_status = $3, last_error = 'worker died during the run',"
            " consecutive_failures = consecutive_failures + 1 WHERE scope = $1 AND job_id = $2",
            row.scope,
            row.job_id,
            RunStatus.ABANDONED.value,
        )
    return rows


async def expire_stale_buffers(conn: asyncpg.Connection, scope: str, older_than_sec: float) -> int:
    """Buffered slots whose retry message never came back (lost while dead-lettering): close them as
    skipped_locked once they are `older_than_sec` past the job's misfire grace. Returns how many."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs r SET status = $4, finished_at = now(),"
        " error = 'buffered message did not return' FROM scheduler.jobs j"
        f" WHERE r.scope = $1 AND r.{ACTIVE_ROWS} AND r.status = $3 AND j.scope = r.scope AND j.job_id = r.job_id"
        " AND r.claimed_at < now() - make_interval(secs => j.misfire_grace_sec + $2)",
        scope,
        older_than_sec,
        RunStatus.BUFFERED.value,
        RunStatus.SKIPPED_LOCKED.value,
    )
    return int(status.split()[-1])


async def prune_runs(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, older_than_days: float, tables: Sequence[str] | None = None
) -> int:
    """Delete finished runs older than the retention; a run still claimed, buffered or running is never deleted.
    `tables`: only in these partitions of scheduler.job_runs (default: anywhere). Returns how many."""
    deleted = 0
    for table in ["job_runs"] if tables is None else [partitions.ident(t) for t in tables]:
        status = await conn.execute(
            f"DELETE FROM scheduler.{table} WHERE scope = $1 AND finished_at < now() - make_interval(secs => $2)"
            " AND NOT (status = ANY($3::text[]))",
            scope,
            older_than_days * 86400,
            sources(ACTIVE),
        )
        deleted += int(status.split()[-1])
    return deleted


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning removed."""

    runs: int
    idempotency_keys: int
    workers: int


async def prune_history(
    conn: asyncpg.Connection,
    scope: str,
    retention_days: float,
    *,
    keys: bool = True,
    dead_workers_after_sec: float | None = DEAD_WORKER_RETENTION_SEC,
) -> Pruned:
    """The retention rule of a scope: finished runs older than `retention_days`, expired idempotency keys (unless
    `keys` is false) and, unless `dead_workers_after_sec` is None, rows of workers dead for longer than that.

    Keys go only once expired, so the duplicate-order guard holds for as long as each key was claimed for.

    Runs: the daily partitions of `scheduler.job_runs` are kept ready a week ahead; a day wholly past the
    retention goes as a whole (`partitions.drop_expired`: no DELETE, no dead tuples), so a run is kept until its
    whole day is past the retention (up to a day longer). Row by row, as before, go only this scope's rows of
    such a day that other scopes share, and those of the default partition (slots no daily partition covers)."""
    now = datetime.now(UTC)
    await partitions.ensure_ahead(conn, now)
    dropped, shared = await partitions.drop_expired(conn, scope, now - timedelta(days=retention_days))
    pruned_runs = dropped + await prune_runs(conn, scope, retention_days, [partitions.DEFAULT, *shared])
    pruned_keys = await idempotency.prune(conn, scope) if keys else 0
    gone = 0 if dead_workers_after_sec is None else await workers.forget_dead(conn, scope, dead_workers_after_sec)
    return Pruned(runs=pruned_runs, idempotency_keys=pruned_keys, workers=gone)
