"""Job actions: create or update, pause, resume, change any definition field, delete (unregister).

Each one that touches a chain goes through `chain.replace`, which holds the job's chain lock while it bumps
the epoch, purges the delay queue and posts the first message: the change takes effect at once and no second
chain appears. These take explicit connections so a caller with its own pool (the bench, a server) can use
them; `Control` is the usual entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import chain, ledger, queue_types, topology
from shared.control import drift, seed_batch, validation
from shared.control.errors import InvalidDefinition, InvalidRequest
from shared.control.results import (
    ChainAction,
    Deleted,
    JobChange,
    MissingAction,
    SeedChange,
    SeededJob,
    SeedFileResult,
)
from shared.definitions import JobDefinition
from shared.errors import ConfigError, UnknownJob
from shared.events import bindings
from shared.publisher import Publisher
from shared.seeding import declare_for
from shared.store import jobs as jobs_store
from shared.store import ledger as ledger_store
from shared.store.jobs import JobRow


async def existing(conn: asyncpg.Connection, scope: str, job_id: str) -> JobRow:
    """The job's row, or UnknownJob."""
    row = await jobs_store.get_job(conn, scope, job_id)
    if row is None:
        raise UnknownJob(scope, job_id)
    return row


async def _rebind(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    before: list[JobRow],
) -> None:
    """Event bindings after a change to `job_id`: bound and unbound at once (workers consume within seconds). Event
    queues are of the scope's queue type, which the publisher carries (from Settings)."""
    also = sorted({name for job in before for name in job.on_success} | {job.job_id for job in before})
    after = await jobs_store.subscription_neighbourhood(conn, scope, job_id, also)
    await bindings.sync(channel, scope, before, after, [job_id], publisher.scope_queue_type)


def _change(job_id: str, changed: bool, replaced: tuple[int, chain.Slot | None]) -> JobChange:
    epoch, slot = replaced
    return JobChange(job_id, changed, epoch, None if slot is None else slot.scheduled_for)


def check_queue_types(scope: str, targets: list[JobDefinition], rows: list[JobRow], where: str = "") -> None:
    """InvalidDefinition (field queue_type) when the jobs of one work queue would disagree on its type, or when a
    definition would change the type of a work queue its live jobs already have (that is `migrate-queues`)."""
    declared = {t.job_id for t in targets}
    members = [queue_types.Member(t.job_id, t.queue_name, t.queue_type.value) for t in targets]
    members += [queue_types.Member(r.job_id, r.queue, r.queue_type) for r in rows if r.job_id not in declared]
    by_id = {r.job_id: r for r in rows}
    for target in targets:
        row = by_id.get(target.job_id)
        if row is not None and row.queue == target.queue_name and row.queue_type != target.queue_type.value:
            jobs = [r.job_id for r in rows if r.queue == row.queue]
            refusal = queue_types.change_refusal(scope, row.queue, row.queue_type, target.queue_type.value, jobs)
            raise InvalidDefinition(refusal, ["queue_type"])
    try:
        queue_types.check_agreement(members, where)
    except ConfigError as exc:
        raise InvalidDefinition(str(exc), ["queue_type"]) from None


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
    check_queue_types(scope, [definition], await jobs_store.list_jobs(conn, scope))
    before = await jobs_store.subscription_neighbourhood(conn, scope, definition.job_id, list(definition.on_success))
    was = next((job for job in before if job.job_id == definition.job_id), None)
    row, changed = await jobs_store.upsert_job(conn, scope, definition)
    await declare_for(channel, row, publisher.scope_queue_type)
    await _rebind(conn, channel, publisher, scope, row.job_id, before)
    replaced = await chain.replace(conn, channel, publisher, row, now)
    await ledger.replaced(conn, publisher, was, row.enabled, replaced[0], now, worker=None)
    return _change(row.job_id, changed, replaced)


async def pause_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    now: datetime,
    note: str | None = None,
    until: datetime | None = None,
) -> JobChange:
    """Disable the job and end its chain now (the waiting message is purged; any in flight is stale). With
    `until`, the watchdog resumes it then (`shared.watchdog.resume`)."""
    row = await existing(conn, scope, job_id)
    await jobs_store.set_enabled(conn, scope, job_id, False, note)
    # the slot ledger: the pause keeps slots from running from the chain's waiting slot on (`paused` on resume)
    paused_from = ledger.pause_start(row, now)
    await ledger_store.mark_paused(conn, scope, job_id, until, paused_from)
    epoch, _ = await chain.replace(conn, channel, publisher, row, now)
    await ledger.pausing(conn, publisher, row, epoch, paused_from, note, now, worker=None)
    return JobChange(job_id, row.enabled, epoch, None)


async def resume_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    now: datetime,
    worker: str | None = None,
) -> JobChange:
    """Enable the job and start a fresh chain from now. The slots the pause kept from running get `paused` rows
    in the slot ledger, and the job's catch-up policy runs some of them (`shared.ledger.paused`).

    All or nothing: the job is enabled in the transaction that starts its chain and writes the gap rows, so a
    broker or database that fails on the way leaves the job paused as it was (a timed pause is tried again by the
    next sweep), never enabled without a chain and without the ledger rows of its pause."""
    row = await existing(conn, scope, job_id)
    await declare_for(channel, row, publisher.scope_queue_type)
    async with conn.transaction():
        await jobs_store.set_enabled(conn, scope, job_id, True, None)
        replaced = await chain.replace(conn, channel, publisher, row, now)
        gaps = await ledger.paused(conn, publisher, row, replaced[0], now, worker=worker) if not row.enabled else None
    change = _change(job_id, not row.enabled, replaced)
    if gaps is None:
        return change
    return dataclasses.replace(change, gaps=gaps.count, catchup=len(gaps.catchup.runs))


def changed_definition(row: JobRow, changes: Mapping[str, Any]) -> JobDefinition:
    """The stored definition with `changes` applied, validated as a whole (InvalidDefinition names the fields).

    Setting `cron_expr` clears `interval_seconds` and the other way round, so a job can switch kinds; an interval
    clears the expected period too (an interval job's period is its interval) unless the changes set one.
    """
    # the row as stored, validated only with the changes applied: a definition that stopped validating (a cron
    # expression refused by newer rules) can be repaired with `set`
    data = row.raw_definition()
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
    await _rebind(conn, channel, publisher, scope, job_id, before)
    return Deleted(job_id, epoch)


@dataclass(frozen=True, slots=True)
class PlannedSeed:
    """One job of a jobs file, decided before anything is written: the file's definition, the live row (None
    for a new job) and the definition to store (`shared.control.drift`)."""

    definition: JobDefinition
    row: JobRow | None
    target: JobDefinition
    merged: drift.Merged | None  # None for a new job


def resets(reset: bool | Collection[str], definitions: list[JobDefinition], path: Path) -> set[str]:
    """The job ids `reset` names (True: every job of the file); InvalidRequest for a name not in the file."""
    declared = {d.job_id for d in definitions}
    if reset is True or reset is False:
        return declared if reset else set()
    unknown = sorted(set(reset) - declared)
    if unknown:
        raise InvalidRequest(f"seed --reset: {', '.join(map(repr, unknown))} not in {path}", "reset")
    return set(reset)


async def plan_seed(
    conn: asyncpg.Connection, scope: str, path: Path, definitions: list[JobDefinition], reset: set[str]
) -> list[PlannedSeed]:
    """What seeding the file will store for each job; InvalidDefinition (before anything is written) when the
    file's values and the runtime changes kept do not make a valid definition together."""
    rows = {row.job_id: row for row in await jobs_store.list_jobs(conn, scope)}
    seeded = await jobs_store.seeded_definitions(conn, scope)
    planned = []
    for definition in definitions:
        row = rows.get(definition.job_id)
        if row is None:
            planned.append(PlannedSeed(definition, None, definition, None))
            continue
        live = jobs_store.declared(row.definition())
        file = jobs_store.declared(definition)
        merged = drift.merge(file, live, seeded.get(definition.job_id), reset=definition.job_id in reset)
        try:
            target = validation.definition({"job_id": definition.job_id, **merged.values}, source=str(path))
        except InvalidDefinition as exc:
            hint = f"the file and the live definition of {definition.job_id!r} do not combine: `seed --reset "
            raise InvalidDefinition(f"{exc}\n{hint}{definition.job_id}` applies the file", exc.fields) from None
        planned.append(PlannedSeed(definition, row, target, merged))
    check_queue_types(scope, [p.target for p in planned], list(rows.values()), str(path))
    return planned


async def seed_planned(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    plan: PlannedSeed,
    now: datetime,
) -> tuple[JobChange, ChainAction]:
    """Store the planned definition and what the file said, declare the topology, and start a new chain only
    when the job is new or something its chain depends on changed: a kept chain keeps its waiting message, its
    retries and buffered slots (a lost chain is the watchdog's to reseed)."""
    row, changed = await jobs_store.upsert_job(conn, scope, plan.target)
    job_id = row.job_id
    await jobs_store.set_seeded_definition(conn, scope, job_id, jobs_store.declared(plan.definition))
    if row.enabled and row.pause_note is not None:
        await jobs_store.set_enabled(conn, scope, job_id, True, None)  # enabled again (reset): the pause note goes
    await declare_for(channel, row, publisher.scope_queue_type)
    if plan.row is None or drift.chain_affected(
        jobs_store.declared(plan.row.definition()), jobs_store.declared(plan.target)
    ):
        replaced = await chain.replace(conn, channel, publisher, row, now)
        await ledger.replaced(conn, publisher, plan.row, row.enabled, replaced[0], now, worker=None)
        return _change(job_id, changed, replaced), ChainAction.STARTED
    upcoming = row.next_due_at if row.enabled and row.has_chain else None
    return JobChange(job_id, changed, row.epoch, upcoming), ChainAction.KEPT


async def seed_file(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    path: Path,
    definitions: list[JobDefinition],
    prune: bool,
    on_job: Callable[[SeededJob], None] | None = None,
    reset: bool | Collection[str] = False,
    connection: AbstractConnection | None = None,
) -> SeedFileResult:
    """Seed every definition of a (validated) jobs file over the live definitions (`shared.control.drift`:
    file edits apply, runtime changes stay unless `reset` names the job or is True); then report, or with
    `prune` disable, the jobs of the scope the file does not declare (never deleted: the file may be wrong).
    Every job is decided before the first is written; they are written in batches (`seed_batch`)."""
    planned = await plan_seed(conn, scope, path, definitions, resets(reset, definitions, path))
    seeded = []
    for first in range(0, len(planned), seed_batch.BATCH):
        # each batch's own clock: with one `now` for the whole file, the last jobs of a long file would get a
        # first slot already past, run late, and count their next slot from then (skipping one)
        batch = planned[first : first + seed_batch.BATCH]
        outcomes, now = await seed_batch.seed_batch(conn, channel, publisher, scope, batch, connection)
        for plan, (result, chain_action) in zip(batch, outcomes, strict=True):
            merged = plan.merged
            seeded.append(
                SeededJob(
                    plan.definition, seed_change(plan.target, result, plan.row), result, now, chain_action,
                    drift=() if merged is None else merged.drift, reset=() if merged is None else merged.reset,
                    applied=() if merged is None else merged.applied,
                )
            )  # fmt: skip
            if on_job is not None:
                on_job(seeded[-1])
    declared = {d.job_id for d in definitions}
    missing = []
    for row in (row for row in await jobs_store.list_jobs(conn, scope) if row.job_id not in declared):
        if not row.enabled:
            missing.append((row.job_id, MissingAction.ALREADY_DISABLED))
        elif prune:
            note = f"pruned: not in {path}"
            await pause_job(conn, channel, publisher, scope, row.job_id, datetime.now(UTC), note=note)
            missing.append((row.job_id, MissingAction.DISABLED))
        else:
            missing.append((row.job_id, MissingAction.LEFT_ENABLED))
    return SeedFileResult(path, seeded, missing)


def seed_change(target: JobDefinition, result: JobChange, before: JobRow | None) -> SeedChange:
    """What seeding did to the stored definition (`before`: the row as it was, if any)."""
    if before is None:
        return SeedChange.NEW
    if not before.enabled and target.enabled:
        return SeedChange.RE_ENABLED  # the file enabled it (it was disabled by the file), or --reset undid a pause
    return SeedChange.CHANGED if result.changed else SeedChange.UNCHANGED
