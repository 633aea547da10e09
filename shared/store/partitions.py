"""The daily partitions of `scheduler.job_runs` (migration 0009): created ahead, and dropped whole once their day is
past the retention, so pruning history leaves no dead tuples behind.

A partition holds the runs of every scope whose slot falls on its UTC day. The scope that prunes drops it only
when no other scope has a row in it and none of its runs is still active; otherwise its own rows there are deleted
the ordinary way (`sweeps.prune_runs`), and the last scope to prune such a day drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from shared.vocabulary import ACTIVE, sources

DEFAULT = "job_runs_default"
DAYS_AHEAD = 7
"""Daily partitions kept ready ahead of today (the pruning sweep runs hourly, so a week is ample)."""
LOCK_TIMEOUT = "2s"
"""Creating or dropping a partition locks the table for a moment: never wait long behind a long transaction."""


@dataclass(frozen=True, slots=True)
class Expired:
    """A daily partition whose whole day is before the retention cut-off."""

    name: str
    upper_bound: datetime
    min_scope: str | None
    max_scope: str | None
    has_active: bool
    last_finished: datetime | None
    approx_rows: int

    def droppable_by(self, scope: str, cutoff: datetime) -> bool:
        """Only `scope`'s rows (or none), none active, none finished after the cut-off."""
        only_mine = self.min_scope is None or self.min_scope == self.max_scope == scope
        finished_before = self.last_finished is None or self.last_finished < cutoff
        return only_mine and not self.has_active and finished_before


async def ensure_ahead(conn: asyncpg.Connection, now: datetime, days_ahead: int = DAYS_AHEAD) -> int:
    """Create the daily partitions from yesterday to `days_ahead` days after `now` that are missing; returns how
    many were created."""
    today = now.date()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        made: int = await conn.fetchval(
            "SELECT scheduler.ensure_run_partitions($1, $2)", today - timedelta(days=1), today + timedelta(days_ahead)
        )
    return made


async def expired(conn: asyncpg.Connection, cutoff: datetime) -> list[Expired]:
    """The daily partitions whose whole day is before `cutoff`, oldest first."""
    records = await conn.fetch("SELECT * FROM scheduler.run_partitions_before($1, $2)", cutoff, sources(ACTIVE))
    return [Expired(**dict(r)) for r in records]


async def drop(conn: asyncpg.Connection, name: str) -> None:
    """Drop one daily partition (its name as `expired` gave it)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"DROP TABLE scheduler.{ident(name)}")


async def drop_expired(conn: asyncpg.Connection, scope: str, cutoff: datetime) -> tuple[int, list[str]]:
    """Drop every expired partition `scope` may drop (see `Expired.droppable_by`). Returns about how many rows
    went with them (the planner's count: counting exactly would read them) and the expired partitions kept (their
    rows of `scope` are for `sweeps.prune_runs` to delete)."""
    gone, kept = 0, []
    for part in await expired(conn, cutoff):
        if part.droppable_by(scope, cutoff):
            await drop(conn, part.name)
            gone += part.approx_rows
        else:
            kept.append(part.name)
    return gone, kept


def ident(name: str) -> str:
    """`name` if it is the default or a daily partition of scheduler.job_runs (it goes into SQL text)."""
    if name == DEFAULT:
        return name
    if not name.startswith("job_runs_p") or not name[len("job_runs_p") :].isdigit():
        raise ValueError(f"not a daily partition of scheduler.job_runs: {name!r}")
    return name
