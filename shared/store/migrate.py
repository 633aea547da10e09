"""Versioned SQL migrations, applied in order under one advisory lock so racing processes never collide."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from shared.locks import lock_key

log = structlog.get_logger(__name__)

MIGRATION_LOCK = lock_key("scheduler", "migrate")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The SQL files shipped in `shared/store/migrations`, ordered by version."""
    found = []
    for entry in resources.files("shared.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection, upto: int | None = None) -> list[int]:
    """Apply every migration not applied yet (up to version `upto`, when given: a schema as older code left it,
    for tests and benchmarks); returns the versions applied now. Safe to call concurrently."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS scheduler;"
            "CREATE TABLE IF NOT EXISTS scheduler.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM scheduler.schema_migrations")}
        applied = []
        for migration in available_migrations():
            if migration.version in done or (upto is not None and migration.version > upto):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO scheduler.schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("migration.applied", version=migration.version, name=migration.name)
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
