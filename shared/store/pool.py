"""The asyncpg pool, with jsonb decoded to Python objects.

asyncpg resets every connection given back to its pool (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL`): a round trip of four statements. The run protocol takes advisory locks and nothing else, and knows
when it gave every one back: it then calls `left_tidy(conn)` and the pool skips the reset for that release.
Any doubt (an unlock that failed: `spoil(conn)`, an error, a holder that never said) keeps the full reset.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg


class TidyConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that can be declared tidy by its holder, for one release."""

    __slots__ = ("_scheduler_spoiled", "_scheduler_tidy")

    def scheduler_mark_tidy(self) -> None:
        self._scheduler_tidy = True

    def scheduler_spoil(self) -> None:
        self._scheduler_spoiled = True

    def scheduler_take_tidy(self) -> bool:
        """Whether the release may skip the reset; clears both marks."""
        tidy = getattr(self, "_scheduler_tidy", False) and not getattr(self, "_scheduler_spoiled", False)
        self._scheduler_tidy = self._scheduler_spoiled = False
        return tidy


def left_tidy(conn: asyncpg.Connection) -> None:
    """The holder of pool connection `conn` released every advisory lock it took and changed no other session
    state: its next release skips the reset. (A plain connection ignores it.)"""
    mark = getattr(conn, "scheduler_mark_tidy", None)
    if mark is not None:
        mark()


def spoil(conn: asyncpg.Connection) -> None:
    """`conn` may still hold a lock its holder failed to give back: its next release resets it in full."""
    mark = getattr(conn, "scheduler_spoil", None)
    if mark is not None:
        mark()


async def _reset(conn: asyncpg.Connection) -> None:
    if isinstance(conn, TidyConnection) and conn.scheduler_take_tidy():
        return
    await conn.reset()


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
        reset=_reset,
        connection_class=TidyConnection,
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
