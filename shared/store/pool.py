"""The asyncpg pool, with jsonb decoded to Python objects."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _server_settings(application_name: str | None) -> dict[str, str]:
    # The worker id as application_name: an operator sees in pg_stat_activity which worker holds which lock.
    return {"application_name": application_name[:63]} if application_name else {}


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, application_name: str | None = None, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python dicts. Raises on the first connection failure."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        server_settings=_server_settings(application_name),
        **kwargs,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, application_name: str | None = None, connect_sec: float = 10) -> asyncpg.Connection:
    """A single connection with the same codecs (lock holders, the CLI)."""
    conn = await asyncpg.connect(
        dsn, command_timeout=60, timeout=connect_sec, server_settings=_server_settings(application_name)
    )
    await _init_connection(conn)
    return conn
