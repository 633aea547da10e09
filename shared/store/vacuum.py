"""Vacuuming the framework's own tables when the server does not.

Every run inserts a `job_runs` row and updates it two or three times, and updates its job's row; a run's older row
versions are garbage that only VACUUM takes back. PostgreSQL's autovacuum does that on its own; on a server where it
is off (`autovacuum = off`, a setting some CI and tuned servers use), the garbage piles up and every statement that
reads through it gets slower: on a two-core machine, 100 one-second jobs went from a 3.5 ms median start delay to
30 ms over a few minutes of runs, and back to 6 ms after one VACUUM. The watchdog's vacuum sweep
(`shared.watchdog.vacuum`) then vacuums the scheduler schema's tables itself, by autovacuum's own rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

SCHEMA = "scheduler"

VacuumSetting = Literal["auto", "always", "off"]
"""`SCHEDULER_VACUUM`: auto (only while the server's autovacuum is off), always, off."""


@dataclass(frozen=True)
class TableGarbage:
    """What the statistics collector says of one table of the scheduler schema."""

    name: str  # schema-qualified, quoted
    live: int
    dead: int
    changed_since_analyze: int


@dataclass(frozen=True)
class Rule:
    """Autovacuum's own trigger, with the server's settings: vacuum a table once its dead rows pass
    `threshold + scale_factor x live`."""

    threshold: int
    scale_factor: float
    analyze_threshold: int
    analyze_scale_factor: float

    def needs_vacuum(self, table: TableGarbage) -> bool:
        return table.dead > self.threshold + self.scale_factor * table.live

    def needs_analyze(self, table: TableGarbage) -> bool:
        return table.changed_since_analyze > self.analyze_threshold + self.analyze_scale_factor * table.live


async def autovacuum_on(conn: asyncpg.Connection) -> bool:
    """Whether the server vacuums on its own: autovacuum needs `track_counts` too."""
    value = await conn.fetchval(
        "SELECT current_setting('autovacuum')::boolean AND current_setting('track_counts')::boolean"
    )
    return bool(value)


async def rule(conn: asyncpg.Connection) -> Rule:
    row = await conn.fetchrow(
        "SELECT current_setting('autovacuum_vacuum_threshold')::int AS threshold,"
        " current_setting('autovacuum_vacuum_scale_factor')::float8 AS scale_factor,"
        " current_setting('autovacuum_analyze_threshold')::int AS analyze_threshold,"
        " current_setting('autovacuum_analyze_scale_factor')::float8 AS analyze_scale_factor"
    )
    assert row is not None
    return Rule(row["threshold"], row["scale_factor"], row["analyze_threshold"], row["analyze_scale_factor"])


async def tables(conn: asyncpg.Connection, schema: str = SCHEMA) -> list[TableGarbage]:
    """The scheduler schema's tables (partitions included, partitioned parents left out: they hold no rows) that
    this session may vacuum (owned by one of its roles, or it is a superuser); the others would only be skipped
    with a warning."""
    rows = await conn.fetch(
        "SELECT format('%I.%I', s.schemaname, s.relname) AS name, s.n_live_tup AS live, s.n_dead_tup AS dead,"
        " s.n_mod_since_analyze AS changed"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.schemaname = $1 AND c.relkind = 'r'"
        " AND (pg_has_role(current_user, c.relowner, 'MEMBER')"
        " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))"
        " ORDER BY s.n_dead_tup DESC",
        schema,
    )
    return [TableGarbage(r["name"], r["live"], r["dead"], r["changed"]) for r in rows]


async def vacuum(conn: asyncpg.Connection, table: str, *, analyze: bool) -> None:
    """VACUUM one table (outside a transaction, as VACUUM must be). SKIP_LOCKED: a table another session is
    vacuuming (another scope's watchdog, the server) is left to it rather than waited for. `table` comes from
    `tables`, quoted there."""
    options = "ANALYZE, SKIP_LOCKED" if analyze else "SKIP_LOCKED"
    await conn.execute(f"VACUUM ({options}) {table}")


async def analyze(conn: asyncpg.Connection, table: str) -> None:
    """ANALYZE one table (its planner statistics), skipping it when another session holds it."""
    await conn.execute(f"ANALYZE (SKIP_LOCKED) {table}")


async def vacuum_all(conn: asyncpg.Connection) -> None:
    """VACUUM ANALYZE every table of the scheduler schema this session may vacuum (benchmarks: a clean start)."""
    for table in await tables(conn):
        await vacuum(conn, table.name, analyze=True)
