"""`lanes.spread` on the real broker: given the connection, many calls go over several channels at once; without
it, one after the other on the channel given (aio-pika names no public way from a channel to its connection).
Seeding a file, from the CLI or over a borrowed connection, passes the connection along."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from shared import lanes
from shared.settings import Settings
from tests.integration.test_cli import cli_here, jobs_file
from tests.support.runtime import Control

pytestmark = pytest.mark.integration


async def _spread_over(
    amqp: aio_pika.abc.AbstractRobustConnection, connection: aio_pika.abc.AbstractConnection | None
) -> tuple[set[int | None], int, int]:
    """The channels the calls ran on, how many calls ran, and the most that ran at once."""
    seen: set[int | None] = set()
    running = most = done = 0

    async def call(channel: AbstractChannel) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        seen.add(channel.number)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1

    channel = await amqp.channel()
    try:
        await lanes.spread(channel, [call] * 40, connection)
    finally:
        await channel.close()
    return seen, done, most


async def test_spread_with_the_connection_runs_calls_side_by_side_on_several_channels(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    seen, done, most = await _spread_over(amqp, amqp)
    assert done == 40 and len(seen) == lanes.CHANNELS and most == lanes.CHANNELS


async def test_spread_without_the_connection_runs_calls_one_after_the_other_on_the_channel(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    seen, done, most = await _spread_over(amqp, None)
    assert done == 40 and len(seen) == 1 and most == 1


async def test_seeding_a_file_declares_over_lanes_of_the_connection_whoever_opened_it(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connections: list[aio_pika.abc.AbstractConnection | None] = []
    spread = lanes.spread

    async def recording(channel: AbstractChannel, calls: Any, connection: Any = None) -> None:
        connections.append(connection)
        await spread(channel, calls, connection)

    monkeypatch.setattr(lanes, "spread", recording)
    path = jobs_file(tmp_path, {f"j{i}": {"cron_expr": "0 0 1 1 *"} for i in range(3)})
    async with Control(pool, amqp, cleanup_scope).control() as c:  # a borrowing session, lent the connection
        await c.seed_file(path)
    assert connections and all(c is amqp for c in connections)
    connections.clear()
    seeded = await cli_here(capsys, settings, cleanup_scope, "seed", "--file", str(path), "--reset")
    assert seeded.code == 0, seeded.err
    assert connections and all(c is not None for c in connections)  # the CLI's own connection
