"""Event triggers against the real RabbitMQ and PostgreSQL (DESIGN section 13): seed 003's pipeline end to end,
topic patterns, a republished event running once, filters refused at load and parking at run time, paused jobs
dropping or holding events, runtime bind/unbind through the control layer, outcome events and trigger counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.context import RunContext
from shared.control.errors import InvalidDefinition
from shared.settings import Settings
from shared.store import triggers
from tests.support.api import serving
from tests.support.runtime import Control, fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration


class Seen:
    """What the handlers saw: (job_id, trigger_source, event topic, event payload, upstream run id)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def handler(self, emit: tuple[str, dict[str, Any]] | None = None) -> Any:
        async def run(ctx: RunContext, params: Any) -> None:
            self.calls.append({
                "job_id": ctx.job_id, "source": ctx.trigger_source, "run_id": ctx.run_id,
                "topic": ctx.event.topic if ctx.event else None,
                "payload": ctx.event.payload if ctx.event else None,
                "event_id": ctx.event.id if ctx.event else None, "upstream": ctx.upstream_run_id,
            })  # fmt: skip
            if emit is not None:
                await ctx.emit(emit[0], {**emit[1], **params.get("emit", {})})

        return run

    def of(self, job_id: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["job_id"] == job_id]


async def publish_event(
    amqp: aio_pika.abc.AbstractRobustConnection, scope: str, topic: str, payload: Any, message_id: str | None
) -> None:
    """As a person would from the management UI: exchange S.events, routing key the topic, a JSON body."""
    channel = await amqp.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(topology.events_exchange_name(scope), ensure=False)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await exchange.publish(aio_pika.Message(body, message_id=message_id), routing_key=topic)
    finally:
        await channel.close()


async def quiet(seconds: float = 1.5) -> None:
    """Time for anything that would (wrongly) run to do so: the assertions after it are about absence."""
    await asyncio.sleep(seconds)


async def test_seed_003_pipeline_runs_processing_only_for_the_big_dataset_then_notifies(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="collect", interval_seconds=3600, default_params={"rows": 10})
    await control.seed(
        job_id="process", reschedule_mode="none", triggers_on=["pipeline.collection.completed"],
        filter="event.rows_count > 1000", on_success=["notify"],
    )  # fmt: skip
    await control.seed(job_id="notify", reschedule_mode="none")
    collect = seen.handler(("pipeline.collection.completed", {"source": "external_api"}))
    handlers = {"collect": (_with_rows(collect), None), "process": (seen.handler(), None),
                "notify": (seen.handler(), None)}  # fmt: skip
    async with running_worker(fast_settings(settings, scope), handlers):
        async with control.control() as c:
            small = await c.run_now("collect", {"rows": 10})
            await c.wait_for(small)
            big = await c.run_now("collect", {"rows": 5000})
            await c.wait_for(big)
        await wait_until(lambda: _has(seen, "notify"), 20, "the notification after the big dataset")
        await quiet()
    (processed,) = seen.of("process")
    assert processed["source"] == "event" and processed["topic"] == "pipeline.collection.completed"
    assert processed["payload"] == {"source": "external_api", "rows_count": 5000}
    (notified,) = seen.of("notify")
    assert notified["source"] == "event" and notified["topic"] == "job.process.succeeded"
    assert notified["upstream"] == processed["run_id"]  # on_success carries the upstream run, as before
    dropped = await _dropped(pool, scope, "process")
    assert dropped == 0  # the small dataset was filtered, not run (no run row)
    counts = await triggers.counts(pool, scope)
    assert counts["collect"] == {"manual": 2} and counts["process"] == {"event": 1} and counts["notify"] == {"event": 1}


def _with_rows(handler: Any) -> Any:
    async def run(ctx: RunContext, params: Any) -> None:
        await handler(ctx, {"emit": {"rows_count": params["rows"]}})

    return run


async def _has(seen: Seen, job_id: str) -> bool:
    return bool(seen.of(job_id))


async def _dropped(pool: asyncpg.Pool, scope: str, job_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2"
                                   " AND status <> 'succeeded'", scope, job_id))  # fmt: skip


async def test_star_hash_and_double_star_patterns_route_as_amqp_topics(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="one-word", reschedule_mode="none", triggers_on=["data.*"])
    await control.seed(job_id="any-words", reschedule_mode="none", triggers_on=["webhooks.#"])
    await control.seed(job_id="seed-style", reschedule_mode="none", triggers_on=["logs.**"])
    assert (await control.job("seed-style"))["triggers_on"] == ["logs.#"]
    handlers = {j: (seen.handler(), None) for j in ("one-word", "any-words", "seed-style")}
    async with running_worker(fast_settings(settings, scope), handlers):
        for topic in ("data.ingestion", "data.a.b", "webhooks", "webhooks.github.push", "logs.api.error", "other"):
            await publish_event(amqp, scope, topic, {"t": topic}, None)
        await wait_until(lambda: _count(seen, 4), 20, "four runs")
        await quiet()
    got = sorted((c["job_id"], c["topic"]) for c in seen.calls)
    assert got == [
        ("any-words", "webhooks"), ("any-words", "webhooks.github.push"), ("one-word", "data.ingestion"),
        ("seed-style", "logs.api.error"),
    ]  # fmt: skip


async def _count(seen: Seen, n: int) -> bool:
    return len(seen.calls) >= n


async def test_a_republished_event_runs_each_job_once(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="load", reschedule_mode="none", triggers_on=["data.ready"])
    async with running_worker(fast_settings(settings, scope), {"load": (seen.handler(), None)}):
        for _ in range(3):
            await publish_event(amqp, scope, "data.ready", {"n": 1}, "evt-42")
        async with control.control() as c:  # the CLI's way, with the same id
            emitted = await c.emit("data.ready", {"n": 1}, "evt-42")
        assert emitted.triggered == ["load"] and emitted.event_id == "evt-42"
        await publish_event(amqp, scope, "data.ready", {"n": 2}, "evt-43")  # another event runs again
        await wait_until(lambda: _count(seen, 2), 20, "two runs")
        await quiet(2)
    assert sorted(c["event_id"] for c in seen.calls) == ["evt-42", "evt-43"]
    rows = await control.runs("load")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}


async def test_a_bad_filter_or_pattern_is_refused_at_load_naming_the_job_and_field(
    pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    for bad, field in (({"filter": "event.rows_count >"}, "filter"), ({"triggers_on": ["a..b"]}, "triggers_on")):
        with pytest.raises(InvalidDefinition) as refused:
            await control.seed(job_id="load", reschedule_mode="none", **{"triggers_on": ["x"], **bad})
        assert "'load'" in str(refused.value) and field in str(refused.value)
    assert await control.job("load") is None  # nothing written


async def test_a_filter_that_fails_on_a_payload_parks_the_event_with_the_reason(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="load", reschedule_mode="none", triggers_on=["data.#"], filter="event.rows_count > 1")
    async with running_worker(fast_settings(settings, scope), {"load": (seen.handler(), None)}):
        await publish_event(amqp, scope, "data.x", {"rows": "no rows_count"}, "bad-1")
        await publish_event(amqp, scope, "data.x", b"[1, 2]", "bad-2")  # not an object
        await publish_event(amqp, scope, "data.x", {"rows_count": 5}, "good")
        await wait_until(lambda: _count(seen, 1), 20, "the good event's run")

        async def parked() -> bool:
            async with control.control() as c:
                return len((await c.dead_letters()).messages) >= 2

        await wait_until(parked, 20, "two parked events")
    async with control.control() as c:
        letters = (await c.dead_letters()).messages
    reasons = sorted((m.reason, m.body[:20]) for m in letters)
    assert [r for r, _ in reasons] == ["event_body", "filter_error"]
    detail = next(m.detail for m in letters if m.reason == "filter_error")
    assert "load" in (detail or "") and "rows_count" in (detail or "")
    assert [c["event_id"] for c in seen.calls] == ["good"]


async def test_a_paused_job_drops_or_holds_its_events_by_its_policy(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="dropper", reschedule_mode="none", triggers_on=["e.x"], on_paused_event="drop")
    await control.seed(job_id="holder", reschedule_mode="none", triggers_on=["e.x"], on_paused_event="hold")
    handlers = {"dropper": (seen.handler(), None), "holder": (seen.handler(), None)}
    async with running_worker(fast_settings(settings, scope), handlers):
        await control.pause("dropper")
        await control.pause("holder")
        await quiet(1.5)  # the workers' refresh (0.5 s here) lets go of the holder's queue
        await publish_event(amqp, scope, "e.x", {}, "while-paused")
        await quiet(2)
        assert seen.calls == []
        held = await _depth(amqp, topology.event_queue_name(scope, "holder"))
        assert held == 1  # waiting, not consumed (nothing loops over it)
        await control.resume("dropper")
        await control.resume("holder")
        await wait_until(lambda: _count(seen, 1), 20, "the held event's run after resume")
        await quiet()
    assert [(c["job_id"], c["event_id"]) for c in seen.calls] == [("holder", "while-paused")]


async def _depth(amqp: aio_pika.abc.AbstractRobustConnection, name: str) -> int:
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_creating_changing_and_deleting_a_job_binds_and_unbinds_at_once_without_a_restart(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=3600)
    handlers = {"tick": (seen.handler(), None), "late": (seen.handler(), None)}
    async with running_worker(fast_settings(settings, scope), handlers):
        # created while the worker runs: its queue is bound at once (an event now waits in it) and consumed soon
        await control.seed(job_id="late", reschedule_mode="none", triggers_on=["a.b"])
        await publish_event(amqp, scope, "a.b", {}, "e1")
        await wait_until(lambda: _count(seen, 1), 20, "the new subscriber's run")
        # changed: the old pattern is unbound, the new one bound
        await control.change("late", triggers_on=["c.*"])
        await publish_event(amqp, scope, "a.b", {}, "e2")
        await publish_event(amqp, scope, "c.d", {}, "e3")
        await wait_until(lambda: _count(seen, 2), 20, "the changed subscriber's run")
        # deleted: its queue goes, events are not routed to it any more
        await control.delete("late")
        async with control.control() as c:
            gone = await c.emit("c.d", {}, "e4")
        assert gone.triggered == []
        await quiet()
    assert [c["event_id"] for c in seen.calls] == ["e1", "e3"]
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await _depth(amqp, topology.event_queue_name(scope, "late"))


async def test_every_run_publishes_its_outcome_with_an_id_from_run_and_status(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=3600)
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await topology.declare_events_exchange(channel, scope)
    await queue.bind(topology.events_exchange_name(scope), "job.tick.*")

    async def boom(ctx: RunContext, params: Any) -> None:
        raise RuntimeError("password=hunter2 is not logged here but the type and message are")

    async with running_worker(fast_settings(settings, scope), {"tick": (boom, None)}), control.control() as c:
        outcome = await c.wait_for(await c.run_now("tick"))
    message = await _get(queue)
    await channel.close()
    body = json.loads(message.body)
    assert message.routing_key == "job.tick.failed" and outcome.status == "failed"
    assert body["run_id"] == str(outcome.run_id) and body["status"] == "failed" and body["trigger_source"] == "manual"
    assert body["attempt"] == 1 and isinstance(body["duration_ms"], int) and body["error"].startswith("RuntimeError")
    assert message.message_id == str(uuid.uuid5(outcome.run_id, "outcome:failed"))


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.1)
    raise AssertionError("no outcome event")


async def test_post_events_and_the_emit_verb_answer_with_the_jobs_an_event_triggers(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope, seen = cleanup_scope, Seen()
    control = Control(pool, amqp, scope)
    await control.seed(job_id="big", reschedule_mode="none", triggers_on=["data.*"], filter="event.rows > 1000")
    await control.seed(job_id="any", reschedule_mode="none", triggers_on=["data.#"])
    handlers = {"big": (seen.handler(), None), "any": (seen.handler(), None)}
    async with running_worker(fast_settings(settings, scope), handlers), serving(settings, scope) as api:
        answer = await api.post("/events/data.ready?id=api-1", json={"rows": 5000})
        assert answer.status_code == 202, answer.text
        expected = {"topic": "data.ready", "event_id": "api-1", "triggered": ["any", "big"], "count": 2}
        assert answer.json() == expected
        refused = await api.post("/events/data.ready", json=[1, 2])
        assert refused.status_code == 422 and "Traceback" not in refused.text
        wild = await api.post("/events/data.*", json={})
        assert wild.status_code == 422
        shell = await cli_emit(settings, scope, "data.ready", '{"rows": 3}')
        assert shell.returncode == 0 and "triggers 1 job(s): any" in shell.stdout
        await wait_until(lambda: _count(seen, 3), 20, "three runs")
        await quiet()
    assert sorted(c["job_id"] for c in seen.calls) == ["any", "any", "big"]
    statuses = {s["job_id"]: s for s in (await _api_jobs(settings, scope))}
    assert statuses["any"]["trigger_counts"] == {"event": 2} and statuses["any"]["triggers_on"] == ["data.#"]


async def cli_emit(settings: Settings, scope: str, topic: str, body: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMQP_URL": settings.amqp_url.get_secret_value(),
           "DATABASE_URL": settings.database_url.get_secret_value(), "SCHEDULER_SCOPE": scope}  # fmt: skip
    argv = [sys.executable, "-m", "scheduler_seed", "emit", topic, "--body", body]
    return await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120)


async def _api_jobs(settings: Settings, scope: str) -> list[dict[str, Any]]:
    async with serving(settings, scope) as api:
        answer = await api.get("/jobs")
        assert answer.status_code == 200
        jobs: list[dict[str, Any]] = answer.json()
        return jobs
