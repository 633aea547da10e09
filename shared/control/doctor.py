"""`doctor`: check what the safety of the design rests on, for one scope, and say it one line per finding.

Facts come from RabbitMQ (the AMQP connection, and its management HTTP API when enabled: feature flags, policies,
queue totals), PostgreSQL and this host's clock; `shared.diagnosis` turns them into findings. Nothing here
changes a queue or a row: the only things declared are the TTL canary's two temporary queues, deleted after.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection

from shared import diagnosis, lanes, topology
from shared.brokers import parse_amqp_urls
from shared.diagnosis import Finding
from shared.errors import SchedulerError, TopologyMismatch
from shared.settings import redact_url
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow
from shared.store.migrate import available_migrations

CANARY_TTL_MS = 300
CANARY_BOUND_SEC = 10.0
MANAGEMENT_PORT = 15672


class ManagementUnavailable(SchedulerError):
    """The management HTTP API could not be read (not enabled, refused, unreachable)."""


@dataclass(frozen=True, slots=True)
class Management:
    """A read-only client of RabbitMQ's management HTTP API (stdlib only, run in a thread)."""

    base_url: str  # http://host:15672
    user: str
    password: str
    vhost: str
    timeout: float = 5.0

    @classmethod
    def for_amqp_url(cls, amqp_url: str, management_url: str | None = None) -> Management:
        """The API on the AMQP host (port 15672, http) with the AMQP user, unless `management_url` says where."""
        amqp = urllib.parse.urlsplit(parse_amqp_urls(amqp_url)[0])  # a list of nodes (either form): the first one
        vhost = urllib.parse.unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
        if management_url:
            parts = urllib.parse.urlsplit(management_url)
            base = f"{parts.scheme}://{parts.hostname}:{parts.port or MANAGEMENT_PORT}"
            return cls(base, parts.username or amqp.username or "guest", parts.password or amqp.password or "", vhost)
        host = amqp.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        base = f"http://{host}:{MANAGEMENT_PORT}"
        return cls(
            base, urllib.parse.unquote(amqp.username or "guest"), urllib.parse.unquote(amqp.password or ""), vhost
        )

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ManagementUnavailable(f"{redact_url(self.base_url)}{path} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnavailable(
                f"management API at {self.base_url} unreachable ({reason}); enable it with "
                "`rabbitmq-plugins enable rabbitmq_management` or set RABBITMQ_MANAGEMENT_URL"
            ) from None

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(self._get, path)

    def queue_path(self, name: str) -> str:
        return f"/api/queues/{urllib.parse.quote(self.vhost, safe='')}/{urllib.parse.quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class ExpectedQueue:
    what: str  # "work queue", "delay queue", "retry queue"
    spec: topology.QueueSpec
    quorum_work: bool
    optional: bool = False  # a retry queue is declared on the job's first retry


def expected_queues(scope: str, jobs: list[JobRow]) -> list[ExpectedQueue]:
    """Every chain queue the scope's jobs need, once each (a shared work queue is listed once)."""
    found: dict[str, ExpectedQueue] = {}
    for job in jobs:
        kind: topology.QueueType = "quorum" if job.queue_type == "quorum" else "classic"
        work = topology.work_queue_spec(scope, job.queue, kind)
        found.setdefault(work.name, ExpectedQueue("work queue", work, kind == "quorum"))
        delay = topology.delay_queue_spec(scope, job.job_id, job.queue, kind)
        found[delay.name] = ExpectedQueue("delay queue", delay, False)
        retry = topology.retry_queue_spec(scope, job.job_id, job.queue, kind)
        found[retry.name] = ExpectedQueue("retry queue", retry, False, optional=True)
    return list(found.values())


def _server_version(connection: AbstractConnection) -> str | None:
    transport = getattr(connection, "transport", None)  # aio-pika's underlay, holding aiormq's connection
    properties: Mapping[str, Any] = getattr(getattr(transport, "connection", None), "server_properties", None) or {}
    version = properties.get("version")
    return version.decode() if isinstance(version, bytes) else version


async def _probe_queue(connection: AbstractConnection, queue: ExpectedQueue) -> Finding:
    """Without the management API: present (passive declare) and equivalent (redeclare), each on its own channel."""
    check = f"{queue.what} {queue.spec.name}"
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue.spec.name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return diagnosis.queue_arguments(queue.spec.name, queue.what, queue.spec.arguments, None, queue.optional)
    finally:
        if not channel.is_closed:
            await channel.close()
    channel = await connection.channel()
    try:
        await topology._declare_queue(channel, queue.spec)
    except TopologyMismatch as exc:
        return Finding(check, False, f"{exc.argument} differs ({exc.detail}): drain and delete it, then seed again")
    finally:
        if not channel.is_closed:
            await channel.close()
    return Finding(check, True, "present, arguments equivalent (policies not checked without the management API)")


async def _queue_findings(
    connection: AbstractConnection, management: Management | None, queues: list[ExpectedQueue]
) -> list[Finding]:
    findings = []
    for queue in queues:
        if management is None:
            findings.append(await _probe_queue(connection, queue))
            continue
        info = await management.get(management.queue_path(queue.spec.name))
        found = None if info is None else dict(info.get("arguments") or {})
        findings.append(
            diagnosis.queue_arguments(queue.spec.name, queue.what, queue.spec.arguments, found, queue.optional)
        )
        if info is None:
            continue
        policy = info.get("effective_policy_definition") or {}
        expiring = diagnosis.policy_expiry(queue.spec.name, queue.what, policy)
        if expiring is not None:
            findings.append(expiring)
        if queue.quorum_work:
            findings.append(diagnosis.delivery_limit(queue.spec.name, found or {}, policy))
    return findings


async def interrupted_moves(connection: AbstractConnection, scope: str, jobs: list[JobRow]) -> Finding:
    """A holding queue of `migrate-queues` still there: a move is under way or was interrupted, and the messages it
    holds reach no worker until the move is run again (one passive declaration per work queue, over `shared.lanes`)."""
    names = sorted({topology.holding_queue_name(scope, job.queue) for job in jobs})
    channel = await connection.channel()
    try:
        left = sorted(set(names) - await lanes.missing(channel, names))
        held = []
        for name in left:
            declared = await channel.declare_queue(name, passive=True)
            held.append(f"{name} holds {declared.declaration_result.message_count} message(s)")
    finally:
        if not channel.is_closed:
            await channel.close()
    if not held:
        return Finding("migrate-queues", True, "no move interrupted (no holding queue)")
    return Finding(
        "migrate-queues", False,
        f"a move is under way or was interrupted: {'; '.join(held)}; if none is running, run migrate-queues "
        "--to <type> again to finish it",
    )  # fmt: skip


async def ttl_canary(
    connection: AbstractConnection, scope: str, queue_type: topology.QueueType
) -> tuple[Finding, Finding | None]:
    """A message with a short TTL through a consumer-less temporary queue of `queue_type` that dead-letters into
    a temporary target through ``S.jobs``, as a delay queue does; and the broker's clock from its x-death time."""
    token = secrets.token_hex(4)
    exchange = topology.exchange_name(scope)
    canary = f"{exchange}.doctor-{token}.canary"
    target = f"{exchange}.doctor-{token}.landed"
    arguments: dict[str, Any] = {"x-dead-letter-exchange": exchange, "x-dead-letter-routing-key": target}
    if queue_type == "quorum":
        arguments |= {
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    channel = await connection.channel(publisher_confirms=True)
    try:
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        landed = await channel.declare_queue(target, durable=True)
        await landed.bind(exchange, routing_key=target)
        waiting = await channel.declare_queue(canary, durable=True, arguments=arguments)
        await waiting.bind(exchange, routing_key=canary)
        started = time.monotonic()
        sent_at = datetime.now(UTC)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(
            b'{"doctor": "canary"}', exchange=exchange, routing_key=canary,
            properties=aiormq.spec.Basic.Properties(expiration=str(CANARY_TTL_MS), delivery_mode=2),
        )  # fmt: skip
        arrived: float | None = None
        broker_skew: Finding | None = None
        while time.monotonic() - started < CANARY_BOUND_SEC:
            got = await landed.get(no_ack=True, fail=False)
            if got is not None:
                arrived = time.monotonic() - started
                broker_skew = _broker_skew(got, sent_at)
                break
            await asyncio.sleep(0.05)
        return diagnosis.ttl_canary(queue_type, arrived, CANARY_BOUND_SEC, CANARY_TTL_MS), broker_skew
    finally:
        if channel.is_closed:
            channel = await connection.channel()
        for name in (canary, target):
            await channel.queue_delete(name)
        await channel.close()


def _broker_skew(message: aio_pika.abc.AbstractIncomingMessage, sent_at: datetime) -> Finding | None:
    """The broker's clock from the x-death time it stamped when the canary expired (whole seconds)."""
    deaths = (message.headers or {}).get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return None
    died = deaths[0].get("time")
    if not isinstance(died, datetime):
        return None
    died = died if died.tzinfo else died.replace(tzinfo=UTC)
    expected = sent_at.timestamp() + CANARY_TTL_MS / 1000
    # the stamp is truncated to the second: the broker's clock lies in [died, died + 1)
    skew = died.timestamp() + 0.5 - expected
    return diagnosis.clock_skew("broker", skew, resolution_sec=1.0)


async def postgres_skew(conn: asyncpg.Connection) -> Finding:
    before = time.time()
    server: datetime = await conn.fetchval("SELECT clock_timestamp()")
    after = time.time()
    skew = server.timestamp() - (before + after) / 2
    return diagnosis.clock_skew("postgresql", skew, resolution_sec=(after - before) / 2)


async def applied_migrations(conn: asyncpg.Connection) -> set[int] | None:
    try:
        records = await conn.fetch("SELECT version FROM scheduler.schema_migrations")
    except asyncpg.UndefinedTableError:
        return None
    return {r["version"] for r in records}


async def diagnose(
    conn: asyncpg.Connection, connection: AbstractConnection, scope: str, management: Management | None
) -> list[Finding]:
    """Every finding for `scope` (see the module docstring), in a fixed order."""
    findings = [diagnosis.broker_version(_server_version(connection))]
    flags: dict[str, str] | None = None
    why: str | None = None
    overview: Mapping[str, Any] = {}
    if management is not None:
        try:
            flags = {f["name"]: f["state"] for f in await management.get("/api/feature-flags") or []}
            overview = await management.get("/api/overview") or {}
        except ManagementUnavailable as exc:
            why, management = str(exc), None
    else:
        why = "no management API configured"
    findings.append(diagnosis.feature_flags(flags, why))
    applied = await applied_migrations(conn)
    findings.append(diagnosis.migrations(applied, [m.version for m in available_migrations()]))
    findings.append(await postgres_skew(conn))
    jobs = await jobs_store.list_jobs(conn, scope) if applied is not None else []
    queues = expected_queues(scope, jobs)
    findings += await _queue_findings(connection, management, queues)
    totals = overview.get("object_totals") or {}
    quorum = None
    if management is not None:
        listed = await management.get(f"/api/queues/{urllib.parse.quote(management.vhost, safe='')}?columns=type")
        quorum = sum(1 for q in listed or [] if q.get("type") == "quorum")
    findings.append(diagnosis.queue_count(totals.get("queues"), quorum, len(queues)))
    if jobs:
        findings.append(await interrupted_moves(connection, scope, jobs))
    broker_clock: Finding | None = None
    for kind in sorted({"quorum" if j.queue_type == "quorum" else "classic" for j in jobs}):
        canary, skew = await ttl_canary(connection, scope, "quorum" if kind == "quorum" else "classic")
        findings.append(canary)
        broker_clock = broker_clock or skew
    if jobs:
        findings.append(broker_clock or diagnosis.clock_skew("broker", None))
    return findings
