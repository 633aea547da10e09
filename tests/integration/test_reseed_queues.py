"""Seeding a file again over jobs it seeded before: each delay queue is looked for (a passive declaration, a few
times cheaper for RabbitMQ than declaring it and its binding again) and declared only when it is gone."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest

from scheduler_seed.cli import amain
from shared import lanes, topology
from shared.settings import Settings

pytestmark = pytest.mark.integration


async def test_missing_names_exactly_the_queues_that_do_not_exist(
    amqp: aio_pika.abc.AbstractRobustConnection, scope: str
) -> None:
    present = [f"{scope}.lanes.{i}" for i in range(3)]
    absent = [f"{scope}.lanes.gone{i}" for i in range(2)]
    channel = await amqp.channel()
    try:
        for name in present:
            await channel.declare_queue(name, auto_delete=False, exclusive=True)
        assert await lanes.missing(channel, [absent[0], *present, absent[1]]) == set(absent)
        assert await lanes.missing(channel, present) == set()
    finally:
        for name in present:
            await channel.queue_delete(name)
        await channel.close()


async def test_a_second_seed_declares_again_only_the_delay_queue_that_is_gone(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str, tmp_path: Path
) -> None:
    scope = cleanup_scope
    path = tmp_path / "jobs.toml"
    path.write_text("".join(f'[jobs.h{i}]\nqueue = "hourly"\ninterval_seconds = 3600\n' for i in range(5)))
    assert await amain(["seed", "--file", str(path), "--scope", scope], settings) == 0
    gone = topology.delay_queue_name(scope, "h3")
    async with amqp.channel() as channel:
        await channel.queue_delete(gone)  # as a broker that lost it would have it

    assert await amain(["seed", "--file", str(path), "--scope", scope], settings) == 0
    async with amqp.channel() as channel:
        names = [topology.delay_queue_name(scope, f"h{i}") for i in range(5)]
        assert await lanes.missing(channel, names) == set()
        declared = await channel.declare_queue(gone, passive=True)
        assert declared.declaration_result.message_count == 0  # its chain message went with it: the watchdog reseeds
