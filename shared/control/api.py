"""`Control`: one entry for every operator action on one scope. The CLI, the tests, and the HTTP API and bot
to come all act through it, so an operator rule is written once.

    async with Control(settings, "mock") as control:
        await control.pause("buy-scanner", note="broker maintenance")

Connections open on first use: a read touches PostgreSQL only, and only write actions migrate the schema.
Every method returns a dataclass of `shared.control.results` or raises an error of `shared.control.errors`.
Every change is an audit row naming the actor (`actor`: the CLI's user, the API token's name, the bot's chat).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import diagnosis, queue_types, topology
from shared.control import audit, dead, doctor, events, jobs, migrate, runs, status, validation
from shared.control.errors import InvalidRequest
from shared.control.publish import default_body, publish_raw
from shared.control.results import (
    AuditEntry,
    BackfillPlan,
    BackfillResult,
    DeadLetters,
    Deleted,
    EventEmitted,
    JobChange,
    JobStatus,
    Published,
    Purged,
    Replayed,
    RunOutcome,
    RunQueued,
    RunRecord,
    SeededJob,
    SeedFileResult,
)
from shared.control.session import Session
from shared.definitions import JobDefinition
from shared.seeding import declare_for
from shared.settings import Settings
from shared.store import audit as audit_store
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow


def _now() -> datetime:
    return datetime.now(UTC)


class Control:
    """Operator actions on the jobs of one scope (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        scope: str | None = None,
        *,
        session: Session | None = None,
        actor: str = "library",
    ) -> None:
        self.settings: Settings | None = settings
        self.scope = scope or settings.scheduler_scope
        self.session = session or Session(settings, self.scope)
        self.actor = actor

    @classmethod
    def borrowing(
        cls,
        conn: asyncpg.Connection,
        channel: AbstractChannel | None,
        scope: str,
        actor: str = "library",
        open_channel: Callable[[], Awaitable[AbstractChannel]] | None = None,
        amqp: AbstractConnection | None = None,
    ) -> Control:
        """A Control over the caller's connection and channel (with publisher confirms), which it never closes.
        `open_channel` instead of a channel: one opened by the caller on first use (see `Session.borrowing`).
        `amqp`: the RabbitMQ connection the channel is of, which `doctor` and `migrate_queues` need."""
        control = cls.__new__(cls)
        control.settings = None
        control.scope = scope
        control.session = Session.borrowing(conn, channel, scope, open_channel, amqp)
        control.actor = actor
        return control

    async def __aenter__(self) -> Control:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    @property
    def default_queue_type(self) -> str:
        """The scope's default queue type (SCHEDULER_QUEUE_TYPE) for jobs that do not set one."""
        return self.scope_queue_type

    @property
    def scope_queue_type(self) -> topology.QueueType:
        """The scope's queue type (`Settings.scheduler_queue_type`): its default for jobs, and the type of its
        parking and event queues."""
        return (self.settings or Settings()).scheduler_queue_type

    async def _writer(self) -> tuple[asyncpg.Connection, AbstractChannel]:
        return await self.session.db(write=True), await self.session.channel()

    async def _audit(
        self,
        action: str,
        job_id: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> None:
        """Record a change that has been made (the audit never blocks or undoes the change itself)."""
        before, after = audit.difference(before, after)
        conn = await self.session.db(write=True)
        await audit.record(conn, self.scope, self.actor, action, job_id, before, after, note)

    async def _row(self, job_id: str) -> JobRow | None:
        return await jobs_store.get_job(await self.session.db(write=True), self.scope, job_id)

    async def audit(self, limit: int = 50, job_id: str | None = None) -> list[AuditEntry]:
        """The latest changes, newest first (of one job with `job_id`)."""
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1, got {limit}", "limit")
        return await audit.recent(await self.session.db(write=True), self.scope, limit, job_id)

    # -- jobs -----------------------------------------------------------------------------------------------

    async def job(self, job_id: str) -> JobRow:
        """The job's stored row (UnknownJob if none)."""
        return await jobs.existing(await self.session.db(), self.scope, job_id)

    async def jobs(self) -> list[JobRow]:
        """Every job of the scope, by job_id."""
        return await jobs_store.list_jobs(await self.session.db(), self.scope)

    async def put(self, definition: Mapping[str, Any] | JobDefinition) -> JobChange:
        """Create or update one job from its definition (the keys of a jobs-file table plus `job_id`) and
        (re)start its chain. InvalidDefinition names every field at fault."""
        if not isinstance(definition, JobDefinition):
            definition = validation.definition(definition)
        conn, channel = await self._writer()
        before = await self._row(definition.job_id)
        # no queue_type given: the job keeps its own, or takes its work queue's, or the scope's default
        siblings = [r for r in await jobs_store.list_jobs(conn, self.scope) if r.queue == definition.queue_name]
        kept = before or (siblings[0] if siblings else None)
        definition = queue_types.with_default([definition], kept.queue_type if kept else self.default_queue_type)[0]
        result = await jobs.seed_job(conn, channel, await self.session.publisher(), self.scope, definition, _now())
        after = await self._row(definition.job_id)
        action = "create" if before is None else "update"
        await self._audit(action, definition.job_id, audit.snapshot(before), audit.snapshot(after))
        return result

    async def seed_file(
        self,
        path: Path,
        prune: bool = False,
        on_job: Callable[[SeededJob], None] | None = None,
        reset: bool | Collection[str] = False,
        note: str | None = None,
    ) -> SeedFileResult:
        """Seed a jobs file over the live definitions: new jobs are created; a field edited in the file since
        the last seed and not changed at runtime takes the file's value; a field changed at runtime (`pause`,
        `set`, the HTTP API) keeps its live value and is reported as drift (`SeededJob.drift`). `reset` (True:
        every job of the file; or the job ids) puts the file's values back. A chain is replaced only when the
        job is new or its schedule, time zone, queue or enabled flag changed, so seeding twice leaves one chain
        per job. Jobs of the scope the file does not declare are reported, never deleted; `prune` disables them.
        The file is checked whole, and every job decided, before anything changes. Each job whose stored
        definition changed is an audit row (`seed`, or `reset` when runtime changes were undone), and the seed
        as a whole is one more, with the drift it left in place."""
        definitions = queue_types.with_default(validation.jobs_file(path), self.default_queue_type)
        conn, channel = await self._writer()
        publisher = await self.session.publisher()
        before = {row.job_id: row for row in await jobs_store.list_jobs(conn, self.scope)}
        result = await jobs.seed_file(
            conn, channel, publisher, self.scope, path, definitions, prune, on_job, reset, self.session.amqp
        )
        note = note or f"from {path}"
        after = {row.job_id: row for row in await jobs_store.list_jobs(conn, self.scope)}
        changes = []
        for job in result.jobs:
            job_id = job.definition.job_id
            old, new = audit.snapshot(before.get(job_id)), audit.snapshot(after.get(job_id))
            if old != new:
                changes.append(("reset" if job.reset else "seed", job_id, *audit.difference(old, new), note))
        await audit_store.record_many(await self.session.db(write=True), self.scope, self.actor, changes)
        changed = [job.definition.job_id for job in result.jobs if job.change.value != "unchanged"]
        pruned = [job_id for job_id, action in result.missing if action.value == "disabled"]
        drifted = {job.definition.job_id: [d.field for d in job.drift] for job in result.jobs if job.drift}
        summary = {"file": str(path), "jobs": len(result.jobs), "changed": changed, "paused": pruned}
        summary |= {"drift": drifted, "reset": sorted(job.definition.job_id for job in result.jobs if job.reset)}
        await self._audit("seed", None, None, summary, note)
        return result

    async def pause(self, job_id: str, note: str | None = None, until: datetime | None = None) -> JobChange:
        """Disable the job and end its chain now; a run in progress finishes. `note` says why (status shows it);
        with `until` (a future instant), the watchdog resumes the job then, by itself."""
        if until is not None and until <= _now():
            raise InvalidRequest(f"pause --until must be in the future, got {until.isoformat()}", "until")
        conn, channel = await self._writer()
        publisher = await self.session.publisher()
        before = await self._row(job_id)
        result = await jobs.pause_job(conn, channel, publisher, self.scope, job_id, _now(), note=note, until=until)
        await self._audit("pause", job_id, audit.snapshot(before), audit.snapshot(await self._row(job_id)), note)
        return result

    async def resume(self, job_id: str, note: str | None = None) -> JobChange:
        """Enable the job and start a fresh chain from now; the slots the pause kept get `paused` rows in the slot
        ledger, and the job's catch-up policy runs some of them. `note` goes into the audit row."""
        conn, channel = await self._writer()
        before = await self._row(job_id)
        publisher = await self.session.publisher()
        result = await jobs.resume_job(conn, channel, publisher, self.scope, job_id, _now(), worker=self.actor)
        after = audit.snapshot(await self._row(job_id))
        await self._audit("resume", job_id, audit.snapshot(before), after, note)
        return result

    async def set(self, job_id: str, changes: Mapping[str, Any]) -> JobChange:
        """Change any definition fields (column names of scheduler.jobs, `run_on_startup` included) and restart
        the chain: effective now. The jobs file is not edited: the next seed keeps the change and reports the
        drift; `seed_file(reset=...)` puts the file's values back."""
        if not changes:
            raise InvalidRequest(f"set {job_id}: nothing to change", "changes")
        conn, channel = await self._writer()
        publisher = await self.session.publisher()
        before = await self._row(job_id)
        result = await jobs.change_job(conn, channel, publisher, self.scope, job_id, changes, _now())
        await self._audit("set", job_id, audit.snapshot(before), audit.snapshot(await self._row(job_id)))
        return result

    async def delete(self, job_id: str) -> Deleted:
        """Unregister the job: its chain ends, its row and its own delay and retry queues go, its runs stay."""
        conn, channel = await self._writer()
        before = await self._row(job_id)
        result = await jobs.delete_job(conn, channel, await self.session.publisher(), self.scope, job_id, _now())
        await self._audit("delete", job_id, audit.snapshot(before), None)
        return result

    async def doctor(self) -> list[diagnosis.Finding]:
        """Check what the design's safety rests on for this scope (`shared.control.doctor`): one finding per
        check; reads only (the TTL canary's temporary queues are deleted again)."""
        conn = await self.session.db()
        await self.session.channel()  # opens the connection, or says the broker is down
        settings = self.settings or Settings()
        management_url = settings.rabbitmq_management_url
        management = doctor.Management.for_amqp_url(
            settings.amqp_url.get_secret_value(), None if management_url is None else management_url.get_secret_value()
        )
        return await doctor.diagnose(conn, self.session.connection(), self.scope, management)

    async def migrate_queues(self, to: str, queue: str | None = None) -> list[migrate.MovedQueue]:
        """Move the scope's work queues (or only `queue`) and their delay and retry queues to queue type `to`
        (classic or quorum): drained, redeclared and reseeded from the record under each chain lock, so no chain
        is lost and no slot runs twice (`shared.control.migrate`). One audit row per work queue moved."""
        conn, channel = await self._writer()
        publisher = await self.session.publisher()
        connection = self.session.connection()
        moved = await migrate.migrate_queues(conn, connection, channel, publisher, self.scope, to, queue)
        for each in moved:
            before = {"queue": each.queue, "queue_type": each.before}
            after = {"queue": each.queue, "queue_type": each.after, "jobs": list(each.jobs),
                     "moved_messages": each.moved_messages}  # fmt: skip
            await self._audit("migrate-queues", None, before, after, f"work queue {each.queue!r} to {each.after}")
        return moved

    # -- runs -----------------------------------------------------------------------------------------------

    async def run_now(self, job_id: str, params: Mapping[str, Any] | None = None, *, queue: bool = False) -> RunQueued:
        """One manual run of the job, with `params` over its default params. RunningNow (nothing queued) when
        the job has a live run, unless `queue`."""
        conn = await self.session.db()
        job = await jobs.existing(conn, self.scope, job_id)
        if not queue:
            await runs.refuse_if_running(conn, job)
        # a queue for the message before any worker started
        await declare_for(await self.session.channel(), job, self.scope_queue_type)
        queued = await runs.run_now(conn, await self.session.publisher(), job, dict(params or {}), _now(), queue)
        after = {"run_id": str(queued.run_id), "params": dict(params or {}), "queue": queue}
        await self._audit("run-now", job_id, None, after)
        return queued

    async def wait_for(
        self,
        queued: RunQueued,
        within_sec: float | None = None,
        on_retry: Callable[[RunOutcome], None] | None = None,
    ) -> RunOutcome:
        """Follow a queued run and the retries the retry policy gives it to the final outcome; ActionFailed
        after `within_sec` (default: as long as every attempt may take)."""
        conn = await self.session.db()
        job = await jobs.existing(conn, self.scope, queued.job_id)
        return await runs.follow_run(conn, job, queued, _now(), within_sec, on_retry)

    async def plan_backfill(
        self,
        job_id: str,
        start: datetime | str,
        end: datetime | str,
        max_slots: int = runs.DEFAULT_MAX_SLOTS,
        names: tuple[str, str] = ("from", "to"),
    ) -> BackfillPlan:
        """The job's past slots in [start, end] and which already have a run (those are not run again).
        Text ends are ISO 8601 (in the job's time zone without an offset), `now` or `now-2h`."""
        conn = await self.session.db()
        job = await jobs.existing(conn, self.scope, job_id)
        return await runs.plan_backfill(conn, job, runs.slots_in_range(job, start, end, _now(), max_slots, names))

    async def backfill(
        self,
        plan: BackfillPlan,
        wait: bool = True,
        on_slot: Callable[[datetime, RunOutcome], None] | None = None,
        on_retry: Callable[[RunOutcome], None] | None = None,
    ) -> BackfillResult:
        """Run each slot of the plan that has no run yet, once (see `shared.control.runs`)."""
        conn = await self.session.db()
        job = await jobs.existing(conn, self.scope, plan.job_id)
        if plan.todo:
            await declare_for(await self.session.channel(), job, self.scope_queue_type)
            slots = [slot.isoformat() for slot in plan.todo]
            await self._audit("backfill", job.job_id, None, {"slots": len(slots), "first": slots[0], "last": slots[-1]})
        return await runs.backfill(conn, await self.session.publisher(), job, plan, wait, on_slot, on_retry)

    async def runs(self, job_id: str, limit: int = 20, gaps: bool = False) -> list[RunRecord]:
        """The job's latest runs, newest slot first; a deleted job's history too (UnknownJob when there is
        neither a job nor a run by that id). With `gaps`, only the slots that got no run (the slot ledger:
        skipped_misfire, skipped_locked, paused, missed)."""
        conn = await self.session.db()
        found = await (runs.gaps if gaps else runs.recent)(conn, self.scope, job_id, limit)
        if not found:
            await jobs.existing(conn, self.scope, job_id)
        return found

    async def status(self) -> list[JobStatus]:
        """Every job of the scope at a glance."""
        return await status.statuses(await self.session.db(), self.scope, _now())

    # -- parked messages, raw publish -----------------------------------------------------------------------

    async def dead_letters(self, limit: int = 50) -> DeadLetters:
        """Parked messages, oldest first (they stay parked)."""
        return await dead.list_parked(await self.session.channel(), self.scope, limit, self.scope_queue_type)

    async def replay(self, message_id: str) -> Replayed:
        """Send one parked message back to its work queue (after a fix) and remove it from parking."""
        replayed = await dead.replay(await self.session.channel(), self.scope, message_id, self.scope_queue_type)
        after = {"message_id": message_id, "reason": replayed.reason, "routing_key": replayed.routing_key}
        await self._audit("replay", None, None, after)
        return replayed

    async def purge_dead(self) -> Purged:
        """Delete every parked message of the scope."""
        purged = await dead.purge(await self.session.channel(), self.scope, self.scope_queue_type)
        await self._audit("purge-dead", None, None, {"count": purged.count})
        return purged

    async def emit(self, topic: str, payload: Any, event_id: str | None = None) -> EventEmitted:
        """An event on `topic` to the scope's `S.events` (its id: `event_id`, or a new one); says which jobs it
        triggers. Audited as `emit` with the topic, id and those jobs."""
        conn, _channel = await self._writer()
        emitted = await events.emit(conn, await self.session.publisher(), topic, payload, event_id)
        after = {"topic": topic, "event_id": emitted.event_id, "triggered": emitted.triggered}
        await self._audit("emit", None, None, after)
        return emitted

    async def publish(self, job_id: str, body: bytes | None = None) -> Published:
        """A raw body (default `{"job_id": JOB}`) to the job's work queue, as from the management UI."""
        job = await self.job(job_id)
        data = default_body(job.job_id) if body is None else body
        channel = await self.session.channel()
        await declare_for(channel, job, self.scope_queue_type)
        routing_key = await publish_raw(channel, self.scope, job.queue, data)
        await self._audit("publish", job.job_id, None, {"routing_key": routing_key, "bytes": len(data)})
        return Published(topology.exchange_name(self.scope), routing_key, len(data))
