"""A slot claimed ahead (lead-time dispatch) whose start fails because PostgreSQL went away is handed back: the
claim is given up and the message put back on the work queue. Giving the claim up needs PostgreSQL too, so the
worker waits for it before it puts the message back: a copy that found the claim still this live worker's would be
dropped as a duplicate, and the slot would stay `claimed` with nobody to run it.

PostgreSQL "goes away" for the worker only: its DATABASE_URL goes through a local TCP forwarder that the test
stops (every session cut, new ones refused) right after the worker claimed a slot ahead, and starts again 3 s later.
Meanwhile the worker counts as alive (a session of its name): the copy of the message cannot take the claim over
from a dead owner, only from one that gave it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from pydantic import SecretStr

from shared.settings import Settings
from shared.store import runs
from shared.worker import Worker
from tests.support.faults import TcpForwarder
from tests.support.ports import free_port
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, running_worker, wait_until

pytestmark = pytest.mark.integration


def through(database_url: str, port: int) -> tuple[str, str, int]:
    """The URL with its host and port replaced by the forwarder's; and the real host and port."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc)), parts.hostname or "127.0.0.1", parts.port or 5432


async def claimed_ahead(control: Control, job_id: str, worker_id: str) -> datetime | None:
    """The slot of a run `worker_id` claimed ahead and has not started yet, if there is one."""
    for row in await control.runs(job_id):
        claimed = row["status"] == "claimed" and row["started_at"] is None and row["worker"] == worker_id
        if claimed and row["scheduled_for"] > now():
            return row["scheduled_for"]  # type: ignore[no-any-return]
    return None


@dataclass
class Pair:
    """Worker A reaches PostgreSQL through `forwarder` (listening on `port`), worker B directly."""

    control: Control
    a: Worker
    forwarder: TcpForwarder
    port: int


@contextlib.asynccontextmanager
async def a_behind_a_forwarder(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, scope: str, **overrides: Any
) -> AsyncIterator[Pair]:
    """Job `handback` every 2 s, workers A and B (lead 900 ms, `overrides`) running it, two runs done."""
    control = Control(pool, amqp, scope)
    await control.seed(job_id="handback", interval_seconds=2, misfire_grace_sec=120)
    port = free_port()
    url, host, real_port = through(settings.database_url.get_secret_value(), port)
    forwarder = TcpForwarder(port, host, real_port)
    await forwarder.start()
    keep_alive = await asyncpg.connect(settings.database_url.get_secret_value())
    direct = fast_settings(settings, scope, scheduler_dispatch_lead_ms=900, **overrides)
    proxied = direct.model_copy(update={"database_url": SecretStr(url)})
    handlers = {"handback": (probe, ProbeParams)}
    try:
        async with running_worker(proxied, handlers) as a, running_worker(direct, handlers):
            # A stays alive to the others through a session of its name (scheduler.workers' liveness), as when its
            # own sessions are back before the message is: the copy cannot take the claim over from a dead owner
            await keep_alive.execute("SELECT set_config('application_name', $1, false)", a.worker_id[:63])
            await wait_until(lambda: _succeeded(control, 2), 30, "first runs")
            yield Pair(control, a, forwarder, port)
    finally:
        await forwarder.stop()
        await keep_alive.close()


async def test_a_slot_handed_back_while_postgres_is_away_runs_once_it_is_back(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    """Two workers: A reaches PostgreSQL through the forwarder, B directly. The copy A puts back goes to either;
    B must not find A's claim still A's (A is alive), so the slot runs. A few rounds, so that B gets a copy."""
    slots: list[datetime] = []
    async with a_behind_a_forwarder(settings, pool, amqp, cleanup_scope) as pair:
        control, forwarder = pair.control, pair.forwarder
        for _ in range(4):
            slot = None
            deadline = asyncio.get_running_loop().time() + 30
            while slot is None and asyncio.get_running_loop().time() < deadline:
                slot = await claimed_ahead(control, "handback", pair.a.worker_id)
                await asyncio.sleep(0.02)
            assert slot is not None, "worker A claims a slot ahead of it (lead 900 ms)"
            slots.append(slot)
            await forwarder.stop()  # PostgreSQL is gone for A, before the slot it claimed
            await asyncio.sleep(3.0)
            await forwarder.start()

            await wait_until(partial(_slot_ran, control, slot), 20, f"the handed-back slot {slot} to run")
    runs = await control.runs("handback")
    for slot in slots:
        rows = [r for r in runs if r["scheduled_for"] == slot]
        assert [r["status"] for r in rows] == ["succeeded"], rows  # once, by the copy that took the claim over
        assert rows[0]["started_at"] - slot < timedelta(seconds=30)


async def _slot_ran(control: Control, slot: datetime) -> bool:
    rows = [r for r in await control.runs("handback") if r["scheduled_for"] == slot]
    return any(r["status"] == "succeeded" for r in rows)


async def _succeeded(control: Control, count: int) -> bool:
    return sum(r["status"] == "succeeded" for r in await control.runs("handback")) >= count


async def test_a_claim_whose_post_is_not_recorded_while_postgres_is_away_is_given_back_once_it_is_back(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other way a claim goes back: its next slot was published but PostgreSQL went away before the post was
    recorded (the forwarder is stopped just before worker A records it). The message goes back unacknowledged; the
    claim must be given up first, or worker B, finding it still A's, drops the copy and the slot never runs."""
    cut: list[uuid.UUID] = []  # the runs whose post A was about to record when PostgreSQL went away
    armed = asyncio.Event()
    record = runs.record_posted_released
    # the chain's next message is published but its post not recorded: a watchdog quick to call the chain lost
    # would reseed it meanwhile (a new epoch, and the copy given back is stale); not what is looked at here
    async with a_behind_a_forwarder(settings, pool, amqp, cleanup_scope, chain_lost_after_sec="30") as pair:
        control, forwarder = pair.control, pair.forwarder

        async def record_after_a_cut(conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> bool:
            if armed.is_set() and conn._addr[1] == pair.port:  # worker A's session, through the forwarder
                armed.clear()
                cut.append(args[3])  # run_id
                await forwarder.stop()
                asyncio.get_running_loop().call_later(3.0, lambda: asyncio.ensure_future(forwarder.start()))
            return await record(conn, *args, **kwargs)

        monkeypatch.setattr(runs, "record_posted_released", record_after_a_cut)
        for round_ in range(4):
            armed.set()
            await wait_until(partial(_cut_count, cut, round_ + 1), 30, "worker A recording a post")
            try:
                await wait_until(partial(_run_succeeded, control, cut[-1]), 30, f"the run {cut[-1]} given back")
            except AssertionError:
                rows = [dict(r) for r in await control.runs("handback") if r["run_id"] == cut[-1]]
                raise AssertionError(f"the run given back did not run: {rows}") from None
    rows = {r["run_id"]: r for r in await control.runs("handback")}
    assert [rows[run_id]["status"] for run_id in cut] == ["succeeded"] * len(cut)


async def _cut_count(cut: list[uuid.UUID], count: int) -> bool:
    return len(cut) >= count


async def _run_succeeded(control: Control, run_id: uuid.UUID) -> bool:
    return any(r["run_id"] == run_id and r["status"] == "succeeded" for r in await control.runs("handback"))
