"""Bad input on the wire (DESIGN I4): hypothesis-generated bodies published to a live worker's work queue.

Every body the framework cannot use is parked in `S.jobs.dead`, byte for byte, with the reason in
`x-park-reason` (the one an independent reading of the body predicts) and a readable `x-park-detail`. The worker
process keeps running, and its normal job keeps its cadence: no slot of it goes missing, nothing else is touched.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared import topology
from shared.messages import BadMessage, parse_message
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store.pool import create_pool
from tests.support.runtime import Control, spawn_worker, stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

JOB = "steady"  # the one real job: interval 2 s, served by the worker under test


@dataclass
class Rig:
    scope: str
    pool: asyncpg.Pool
    amqp: aio_pika.abc.AbstractRobustConnection
    channel: aio_pika.abc.AbstractChannel
    control: Control
    worker: Any
    strays: list[bytes] = field(default_factory=list)  # parked messages nobody was waiting for
    published: int = 0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(servers: Settings) -> AsyncIterator[Rig]:
    """One scope, one `steady` job, one probe worker process for the whole module; all removed afterwards."""
    scope = "t" + secrets.token_hex(4)
    dsn, url = servers.database_url.get_secret_value(), servers.amqp_url.get_secret_value()
    pool = await create_pool(dsn, min_size=1, max_size=4)
    amqp = await aio_pika.connect_robust(url)
    control = Control(pool, amqp, scope)
    await control.seed(job_id=JOB, interval_seconds=2)
    worker = spawn_worker(scope, [JOB], servers)
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await wait_until(lambda: succeeded(control, 2), 60, "two runs of the steady job")
        yield Rig(scope, pool, amqp, channel, control, worker)
    finally:
        stop_process(worker)
        cleanup = await amqp.channel()
        await topology.delete_scope(cleanup, scope, [JOB], [JOB])
        await jobs_store.delete_scope(pool, scope)
        await amqp.close()
        await pool.close()


async def succeeded(control: Control, at_least: int) -> bool:
    return bool(sum(r["status"] == "succeeded" for r in await control.runs(JOB)) >= at_least)


def expected_reasons(body: bytes, scope: str) -> set[str]:
    """What parking may say, read independently of the worker; empty for a body the worker may run.

    JSON nested some hundreds of levels deep is refused as `not_json` ("nested too deeply") or not, depending on
    how deep the parser's caller already is: near that edge the worker's answer and this reading may differ."""
    edge = {"not_json"} if nesting(body) >= 400 else set()
    try:
        message, _ = parse_message(body)
    except BadMessage as exc:
        return {exc.reason} | edge
    if message.scope is not None and message.scope != scope:
        return {"wrong_scope"} | edge
    if message.job_id != JOB:
        return {"unknown_job"} | edge
    return set()


def nesting(body: bytes) -> int:
    """The deepest bracket nesting of a body (brackets inside strings count too: an upper bound is enough)."""
    depth = deepest = 0
    for byte in body:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


async def publish_and_wait_parked(rig: Rig, body: bytes) -> aio_pika.abc.AbstractIncomingMessage:
    """Publish `body` to the job's work queue (through the scope's exchange) and return its parked copy."""
    marker = uuid.uuid4().hex
    exchange = await rig.channel.get_exchange(topology.exchange_name(rig.scope), ensure=False)
    message = aio_pika.Message(body, headers={"x-test-id": marker})
    await exchange.publish(message, routing_key=topology.work_queue_name(rig.scope, JOB), timeout=10)
    rig.published += 1
    dead = await rig.channel.get_queue(topology.dead_name(rig.scope), ensure=False)
    for _ in range(600):
        parked = await dead.get(no_ack=False, fail=False, timeout=10)
        if parked is None:
            await asyncio.sleep(0.05)
            continue
        await parked.ack()
        if (parked.headers or {}).get("x-test-id") == marker:
            return parked
        rig.strays.append(parked.body)
    raise AssertionError(f"body {body[:200]!r} was not parked within 30 s (worker alive: {rig.worker.poll() is None})")


# -- the bodies ------------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
bad_ids = st.sampled_from(
    ["x'; drop table scheduler.jobs; --", "a.b", "../../etc/passwd", "Steady", "", " steady", "steady\n", "ü",
     "x" * 64, "#", "*", "amq.default", "steady.delay", "-steady"]
) | st.text(max_size=70)  # fmt: skip
field_values = {
    "job_id": st.integers() | st.lists(st.integers(), max_size=2) | st.none() | bad_ids,
    "params": st.lists(json_scalars, max_size=3) | st.text(max_size=20) | st.integers(),
    "attempt": st.integers(max_value=0) | st.integers(min_value=1001) | st.text(max_size=5),
    "epoch": st.integers(max_value=-1) | st.text(max_size=5) | st.floats(allow_nan=False, min_value=0.5, max_value=0.6),
    "scheduled_for": st.sampled_from(["9999-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "tomorrow", "2026-13-45"])
    | st.integers(min_value=10**13),
    "expires_at": st.sampled_from(["not a date", "0000-00-00"]),
    "timeout_sec": st.integers(max_value=0) | st.just(10**9),
    "max_attempts": st.integers(max_value=0) | st.integers(min_value=101),
    "run_id": st.text(max_size=12),
    "trigger_source": st.text(max_size=10).filter(
        lambda t: t not in ("scheduler", "manual", "retry", "startup", "event")
    ),
    "schema_version": st.integers(max_value=0),
    "scope": bad_ids,
}


@st.composite
def wrong_field(draw: st.DrawFn) -> bytes:
    """A real job's message with one field of the wrong type or out of range, maybe with unknown fields."""
    name = draw(st.sampled_from(sorted(field_values)))
    unknown = draw(st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=3))
    return json.dumps({**unknown, "job_id": JOB, name: draw(field_values[name])}).encode()


@st.composite
def wrong_encoding(draw: st.DrawFn) -> bytes:
    text = json.dumps(
        {"job_id": JOB, "params": {"note": draw(st.sampled_from(["é", "ü", "€", "日本"]))}}, ensure_ascii=False
    )
    encoding = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "shift_jis"]))
    return text.encode(encoding, errors="replace")


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(min_value=66_000, max_value=400_000))
    where = draw(st.sampled_from(["params", "job_id", "unknown"]))
    if where == "params":
        return json.dumps({"job_id": JOB, "params": {"blob": "x" * size}}).encode()
    if where == "job_id":
        return json.dumps({"job_id": "y" * size}).encode()
    return json.dumps({"job_id": JOB, "padding": "z" * size}).encode()


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=900, max_value=120_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = opener * depth + "1" + closer * depth
    job = draw(st.sampled_from(["nobody", JOB]))
    return (f'{{"job_id":"{job}","params":{{"n":{inner}}}}}' if draw(st.booleans()) else inner).encode()


bodies = st.one_of(
    st.binary(max_size=2000),
    wrong_encoding(),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=10).filter(lambda k: k != "job_id"), json_values, max_size=5).map(
        lambda d: json.dumps(d).encode()
    ),
    wrong_field(),
    huge(),
    deep(),
    st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
    .filter(lambda j: j != JOB)
    .map(lambda j: json.dumps({"job_id": j, "trigger_source": "scheduler", "epoch": 1}).encode()),
)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(body=bodies)
async def test_every_bad_body_is_parked_with_the_reason_and_the_worker_keeps_running(rig: Rig, body: bytes) -> None:
    reasons = expected_reasons(body, rig.scope)
    assume(reasons)
    parked = await publish_and_wait_parked(rig, body)
    headers = parked.headers or {}
    assert parked.body == body, "parked byte for byte"
    assert headers["x-park-reason"] in reasons, headers.get("x-park-detail")
    assert str(headers["x-park-detail"]).strip(), "a readable detail"
    assert headers["x-original-queue"] == JOB
    assert rig.worker.poll() is None, "the worker is still running"


NASTY = [
    b"\x00\xff\xfe garbage",
    b"",
    b"null",
    b'"just a string"',
    b"[" * 200_000,
    ("[" * 5000 + "]" * 5000).encode(),
    json.dumps({"job_id": JOB, "attempt": -1, "surprise": True}).encode(),
    json.dumps({"job_id": JOB, "scheduled_for": "9999-12-31T23:59:59Z"}).encode(),
    json.dumps({"job_id": "x'; drop table scheduler.jobs; --"}).encode(),
    json.dumps({"job_id": JOB, "params": {"blob": "x" * 100_000}}).encode(),
    json.dumps({"job_id": JOB, "scope": "someone-else"}).encode(),
    '{"job_id": "steady", "params": {"note": "é"}}'.encode("latin-1"),
]


async def test_after_a_flood_of_garbage_the_job_kept_its_cadence_and_nothing_else_changed(rig: Rig) -> None:
    before = await rig.control.job(JOB)
    for body in NASTY:
        parked = await publish_and_wait_parked(rig, body)
        assert (parked.headers or {}).get("x-park-reason") in expected_reasons(body, rig.scope)
    last = max(r["scheduled_for"] for r in await rig.control.runs(JOB))
    await wait_until(lambda: _ran_after(rig, last), 30, "the steady job's next slot after the flood")
    assert rig.worker.poll() is None, "the worker survived every body"
    assert rig.strays == [], "every parked message was one of ours"
    after = await rig.control.job(JOB)
    assert (after["epoch"], after["enabled"], after["interval_seconds"]) == (
        before["epoch"], before["enabled"], before["interval_seconds"],
    ), "no body reseeded, paused or changed the job"  # fmt: skip
    runs = await rig.control.runs()
    assert {r["job_id"] for r in runs} == {JOB}, "no run of any other job id"
    chain = sorted(r["scheduled_for"] for r in runs if r["epoch"] is not None and r["attempt"] == 1)
    gaps = [(a, b) for a, b in itertools.pairwise(chain) if (b - a).total_seconds() != 2]
    assert gaps == [], "every 2 s slot of the steady job has its run: the chain never broke"
    assert all(r["status"] == "succeeded" for r in runs), [dict(r) for r in runs if r["status"] != "succeeded"]
    delay = await rig.channel.declare_queue(topology.delay_queue_name(rig.scope, JOB), passive=True)
    assert (delay.declaration_result.message_count or 0) <= 1, "still one chain"
    print(f"bad bodies published and parked: {rig.published}")


async def _ran_after(rig: Rig, last: Any) -> bool:
    return any(r["scheduled_for"] > last and r["status"] == "succeeded" for r in await rig.control.runs(JOB))
