"""A database of its own on the test server, for what must not touch the shared `scheduler` schema: a migration
applied to old data, table statistics that no other test moves, millions of generated rows."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.store.migrate import migrate


def database_dsn(dsn: str, name: str) -> str:
    """`dsn` with its database replaced by `name`."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def private_database(dsn: str, upto: int | None = None, prefix: str = "t") -> AsyncIterator[str]:
    """A new database on `dsn`'s server, migrated (to version `upto`, when given), for the block (its DSN); dropped
    afterwards whatever happened."""
    name = f"{prefix}{secrets.token_hex(5)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            private = database_dsn(dsn, name)
            conn = await asyncpg.connect(private)
            try:
                await migrate(conn, upto)
            finally:
                await conn.close()
            yield private
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
