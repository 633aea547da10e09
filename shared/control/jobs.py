"""Job actions: create or update, pause, resume, change any definition field, delete (unregister).

Each one that touches a chain goes through `chain.replace`, which holds the job's chain lock while it bumps
the epoch, purges the delay queue and posts the first message: the change takes effect at once and no second
chain appears. These take explicit connections so a caller with its own pool (the bench, a server) can use
them; `Control` is the usual entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel

from shared import chain, topology
from shared.control import validation
from shared.control.results import Deleted, JobChange, MissingAction, SeedChange, SeededJob, SeedFileResult
from shared.definitions import JobDefinition
from shared.errors import UnknownJob
from shared.events import bindings
from shared.publisher import Publisher
from shared.seeding import declare_for
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow


async def existing(conn: asyncpg.Connection, scope: str, job_id: str) -> JobRow:
    """The job's row, or UnknownJob."""
    row = await jobs_store.get_job(conn, scope, job_id)
    if row is None:
        raise UnknownJob(scope, job_id)
    return row


async def _rebind(
    conn: asyncpg.Connection, channel: AbstractChannel, scope: str, job_id: str, before: list[JobRow]
) -> None:
    """Event bindings after a change to `job_id`: bound and unbound at once (workers consume within seconds)."""
    also = sorted({name for job in before for name in job.on_success} | {job.job_id for job in before})
    after = await jobs_store.subscription_neighbourhood(conn, scope, job_id, also)
    await bindings.sync(channel, scope, before, after, [job_id])


def _change(job_id: str, changed: bool, replaced: tuple[int, chain.Slot | None]) -> JobChange:
    epoch, slot = replaced
    return JobChange(job_id, changed, epoch, None if slot is None else slot.scheduled_for)


async def seed_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    definition: JobDefinition,
    now: datetime,
) -> JobChange:
    """Upsert the definition, declare its topology (event bindings included) and replace its chain: seeding twice
    leaves one chain."""
    before = await jobs_store.subscription_neighbourhood(conn, scope, definition.job_id, list(definition.on_success))
    row, changed = await jobs_store.upsert_job(conn, scope, definition)
    await declare_for(channel, row)
    await _rebind(conn, channel, scope, row.job_id, before)
    return _change(row.job_id, changed, await chain.replace(conn, channel, publisher, row, now))


async def pause_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    now: datetime,
    note: str | None = None,
) -> JobChange:
    """Disable the job and end its chain now (the waiting message is purged; any in flight is stale)."""
    row = await existing(conn, scope, job_id)
    await jobs_store.set_enabled(conn, scope, job_id, False, note)
    epoch, _ = await chain.replace(conn, channel, publisher, row, now)
    return JobChange(job_id, row.enabled, epoch, None)


async def resume_job(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, scope: str, job_id: str, now: datetime
) -> JobChange:
    """Enable the job and start a fresh chain from now."""
    row = await existing(conn, scope, job_id)
    await jobs_store.set_enabled(conn, scope, job_id, True, None)
    await declare_for(channel, row)
    return _change(job_id, not row.enabled, await chain.replace(conn, channel, publisher, row, now))


def changed_definition(row: JobRow, changes: Mapping[str, Any]) -> JobDefinition:
    """The stored definition with `changes` applied, validated as a whole (InvalidDefinition names the fields).

    Setting `cron_expr` clears `interval_seconds` and the other way round, so a job can switch kinds; an interval
    clears the expected period too (an interval job's period is its interval) unless the changes set one.
    """
    data = row.definition().model_dump()
    if changes.get("cron_expr") is not None:
        data["interval_seconds"] = None
    if changes.get("interval_seconds") is not None:
        data["cron_expr"] = None
        data["expected_period_sec"] = None
    data.update(changes)
    data["job_id"] = row.job_id  # the key is not a field to change
    return validation.definition(data, source=f"set {row.job_id}")


async def change_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    changes: Mapping[str, Any],
    now: datetime,
) -> JobChange:
    """Apply `changes` to the stored definition and restart the chain: takes effect now."""
    definition = changed_definition(await existing(conn, scope, job_id), changes)
    return await seed_job(conn, channel, publisher, scope, definition, now)


async def delete_job(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, scope: str, job_id: str, now: datetime
) -> Deleted:
    """Unregister the job: its chain ends (disabled, epoch bumped and delay queue purged under the chain lock,
    so a message in flight is stale), then its row and its own delay and retry queues go. Its run history
    stays, and so does its work queue, which other jobs may share. A message still on its way to the work
    queue finds no job and is parked, where `dead` shows it."""
    row = await existing(conn, scope, job_id)
    before = await jobs_store.subscription_neighbourhood(conn, scope, job_id, [])
    await jobs_store.set_enabled(conn, scope, job_id, False, "deleted")
    epoch, _ = await chain.replace(conn, channel, publisher, row, now)
    await jobs_store.delete_job(conn, scope, job_id)
    await topology.delete_job_queues(channel, scope, job_id)
    await _rebind(conn, channel, scope, job_id, before)
    return Deleted(job_id, epoch)


async def seed_file(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    path: Path,
    definitions: list[JobDefinition],
    prune: bool,
    on_job: Callable[[SeededJob], None] | None = None,
) -> SeedFileResult:
    """Seed every definition of a (validated) jobs file; then report, or with `prune` disable, the jobs of the
    scope the file does not declare (never deleted: the file may be wrong)."""
    before = {row.job_id: row for row in await jobs_store.list_jobs(conn, scope)}
    seeded = []
    for definition in definitions:
        # each job's own clock: with one `now` for the whole file, the last jobs of a long file would get a
        # first slot already past, run late, and count their next slot from then (skipping one)
        now = datetime.now(UTC)
        result = await seed_job(conn, channel, publisher, scope, definition, now)
        seeded.append(
            SeededJob(definition, seed_change(definition, result, before.get(definition.job_id)), result, now)
        )
        if on_job is not None:
            on_job(seeded[-1])
    declared = {d.job_id for d in definitions}
    missing = []
    for row in (row for row in before.values() if row.job_id not in declared):
        if not row.enabled:
            missing.append((row.job_id, MissingAction.ALREADY_DISABLED))
        elif prune:
            note = f"pruned: not in {path}"
            await pause_job(conn, channel, publisher, scope, row.job_id, datetime.now(UTC), note=note)
            missing.append((row.job_id, MissingAction.DISABLED))
        else:
            missing.append((row.job_id, MissingAction.LEFT_ENABLED))
    return SeedFileResult(path, seeded, missing)


def seed_change(definition: JobDefinition, result: JobChange, before: JobRow | None) -> SeedChange:
    """What seeding did to the stored definition (`before`: the row as it was, if any)."""
    if before is None:
        return SeedChange.NEW
    if not before.enabled and definition.enabled:
        return SeedChange.RE_ENABLED  # the file is the truth: a job paused by hand runs again after a seed
    return SeedChange.CHANGED if result.changed else SeedChange.UNCHANGED
