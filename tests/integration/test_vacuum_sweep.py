"""The vacuum sweep on the real server: garbage in a table past autovacuum's trigger is taken back, a table below
it is left alone, and in `auto` the sweep follows the server's own autovacuum setting."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.store import vacuum as store
from shared.watchdog.vacuum import Vacuuming
from tests.support.logcapture import capture_logs


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A private schema with two tables: `churned` (1,000 rows, 900 of them deleted) and `quiet` (1,000 rows)."""
    name = "t" + secrets.token_hex(4)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        for table in ("churned", "quiet"):
            await conn.execute(  # the server's autovacuum, if on, leaves it to the sweep
                f"CREATE TABLE {name}.{table} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)"
            )
            await conn.execute(f"INSERT INTO {name}.{table} SELECT g, 'x' FROM generate_series(1, 1000) g")
        await conn.execute(f"VACUUM ANALYZE {name}.churned, {name}.quiet")
        await conn.execute(f"DELETE FROM {name}.churned WHERE id > 100")
        await conn.execute("SELECT pg_stat_force_next_flush()")
        yield conn, name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


async def garbage(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[int, int]]:
    """table -> (dead rows, vacuums) as the statistics say, after this session's own counts are flushed."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    rows = await conn.fetch(
        "SELECT relname, n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1", schema
    )
    return {r["relname"]: (r["n_dead_tup"], r["vacuum_count"]) for r in rows}


async def test_tables_past_the_trigger_are_vacuumed_and_the_others_left_alone(
    schema: tuple[asyncpg.Connection, str],
) -> None:
    conn, name = schema
    before = await garbage(conn, name)
    assert before["churned"][0] == 900 and before["quiet"][0] == 0
    sweep = Vacuuming("always", schema=name)
    with capture_logs() as logs:
        await sweep.run(conn)
    after = await garbage(conn, name)
    assert after["churned"] == (0, before["churned"][1] + 1)
    assert after["quiet"] == before["quiet"]  # below the trigger: not vacuumed
    vacuumed = [e for e in logs if e["event"] == "watchdog.vacuumed"]
    assert [(e["table"], e["dead"]) for e in vacuumed] == [(f"{name}.churned", 900)]

    await conn.execute(f"DELETE FROM {name}.churned WHERE id > 50")  # 50 more: not past 50 + 0.2 x 100
    with capture_logs() as logs:
        await sweep.run(conn)  # within `every_sec` of the last look: nothing is read
        sweep._last = float("-inf")
        await sweep.run(conn)
    assert [e for e in logs if e["event"] == "watchdog.vacuumed"] == []
    assert (await garbage(conn, name))["churned"][0] == 50


async def test_auto_follows_the_servers_autovacuum(schema: tuple[asyncpg.Connection, str]) -> None:
    conn, name = schema
    server_vacuums = await conn.fetchval("SELECT current_setting('autovacuum')::boolean")
    assert await store.autovacuum_on(conn) is server_vacuums
    vacuums = (await garbage(conn, name))["churned"][1]
    await Vacuuming("auto", schema=name).run(conn)
    assert (await garbage(conn, name))["churned"][1] == vacuums + (0 if server_vacuums else 1)
    await Vacuuming("off", schema=name).run(conn)
    await Vacuuming("always", schema=name).run(conn)  # nothing left past the trigger when auto vacuumed
    assert (await garbage(conn, name))["churned"][1] == vacuums + 1
