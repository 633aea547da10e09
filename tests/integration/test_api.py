"""The HTTP API against the real servers, the app in this process: every endpoint, each refusal, the audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import httpx
import pytest

from shared import topology
from shared.settings import Settings
from tests.support.api import OPERATOR_TOKEN, VIEWER_TOKEN, bearer, serving, token_set
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # a chain that never fires during a test


@pytest.fixture
async def api(settings: Settings, cleanup_scope: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, cleanup_scope) as client:
        yield client


class Recorder:
    """A notifier that keeps what it was given (the Telegram bot's place)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def notify(self, text: str) -> None:
        self.lines.append(text)


async def test_create_then_update_read_change_pause_resume_delete(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    body = {"job_id": "alpha", "cron_expr": YEARLY, "description": "first", "default_params": {"k": 1}}
    created = await api.post("/jobs", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["created"] is True and created.json()["scheduled_by"] == "cron_expr"
    again = await api.post("/jobs", json={**body, "description": "second"})
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["changed"] is True

    listed = (await api.get("/jobs")).json()
    assert [j["job_id"] for j in listed] == ["alpha"] and len(listed[0]["next_slots"]) == 3
    one = await api.get("/jobs/alpha")
    assert one.status_code == 200 and one.json()["job"]["description"] == "second"
    assert one.json()["status"]["enabled"] is True

    patched = await api.patch("/jobs/alpha", json={"interval_seconds": 3600})
    assert patched.status_code == 200 and patched.json()["scheduled_by"] == "interval_seconds"
    paused = await api.post("/jobs/alpha/pause", json={"note": "broker maintenance"})
    assert paused.status_code == 200 and paused.json()["enabled"] is False and paused.json()["first_slot"] is None
    row = await pool.fetchrow("SELECT enabled, pause_note FROM scheduler.jobs WHERE scope = $1 AND job_id = 'alpha'",
                              api_scope(api))  # fmt: skip
    assert row is not None and (row["enabled"], row["pause_note"]) == (False, "broker maintenance")
    resumed = await api.post("/jobs/alpha/resume")
    assert resumed.status_code == 200 and resumed.json()["enabled"] is True and resumed.json()["first_slot"]

    deleted = await api.delete("/jobs/alpha")
    assert deleted.status_code == 200 and deleted.json()["job_id"] == "alpha"
    assert (await api.get("/jobs/alpha")).status_code == 404
    gone = await api.post("/jobs/alpha/pause")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found" and "alpha" in gone.json()["detail"]

    audit = (await api.get("/audit", params={"limit": 10})).json()
    assert [e["action"] for e in audit] == ["delete", "resume", "pause", "set", "update", "create"]
    assert {e["actor"] for e in audit} == {"api:local"}
    assert audit[2]["note"] == "broker maintenance" and audit[2]["after"]["enabled"] is False
    assert audit[3]["before"]["cron_expr"] == YEARLY and audit[3]["after"]["interval_seconds"] == 3600
    assert (await api.get("/audit", params={"job_id": "nobody"})).json() == []


def api_scope(api: httpx.AsyncClient) -> str:
    return str(api.headers.get("x-test-scope") or api._transport.app.state.backend.scope)  # type: ignore[attr-defined]


async def test_a_queue_of_another_scope_is_refused_naming_the_field_and_nothing_is_written(
    api: httpx.AsyncClient,
) -> None:
    body = {"job_id": "scanner", "queue": "real.jobs.buy-scanner", "interval_seconds": 60}
    refused = await api.post("/jobs", json=body)
    assert refused.status_code == 422 and refused.json()["fields"] == ["queue"]
    assert "scope 'real'" in refused.json()["detail"]
    own = await api.post("/jobs", json={**body, "queue": f"{api_scope(api)}.jobs.buy-scanner", "enabled": False})
    assert own.status_code == 201 and own.json()["queue"] == f"{api_scope(api)}.jobs.buy-scanner"
    assert [j["job_id"] for j in (await api.get("/jobs")).json()] == ["scanner"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_id": "a", "cron_expr": "61 * * * *"}, "cron_expr"),
        ({"job_id": "a", "cron_expr": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"job_id": "a.b", "interval_seconds": 5}, "job_id"),
        ({"job_id": "a", "interval_seconds": 5, "default_params": "not an object"}, "default_params"),
        ({"job_id": "a", "interval_seconds": 5, "no_such_key": 1}, "no_such_key"),
        ({"job_id": "a", "interval_seconds": 0}, "interval_seconds"),
    ],
)
async def test_a_bad_definition_is_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    refused = await api.post("/jobs", json=body)
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["fields"] and refused.json()["error"] == "invalid"
    assert "Traceback" not in refused.text
    assert (await api.get("/jobs")).json() == []


async def test_bad_paths_queries_and_bodies_are_422_naming_the_field(api: httpx.AsyncClient) -> None:
    await api.post("/jobs", json={"job_id": "alpha", "cron_expr": YEARLY})
    cases = [
        (await api.get("/jobs/a.b"), "job_id"),
        (await api.get("/jobs/alpha/runs", params={"limit": 0}), "limit"),
        (await api.post("/jobs/alpha/run-now", json={"params": [1]}), "params"),
        (await api.post("/jobs/alpha/run-now", json={"params": {"x": "y" * 70_000}}), "params"),
        (await api.post("/jobs/alpha/backfill", json={"from": "yesterday-ish", "to": "now"}), "from"),
        (
            await api.post("/jobs/alpha/pause", content=b"{not json", headers={"content-type": "application/json"}),
            "body",
        ),
        (await api.patch("/jobs/alpha", json={"timezone": "Nowhere/Else"}), "timezone"),
        (await api.post("/alerts", json={"alerts": "none"}), "alerts"),
    ]
    for response, field in cases:
        assert response.status_code == 422, (field, response.text)
        assert any(field in f for f in response.json()["fields"]), (field, response.json())


async def test_run_now_is_202_with_a_run_id_and_its_run_is_listed(api: httpx.AsyncClient, settings: Settings) -> None:
    scope = api_scope(api)
    await api.post("/jobs", json={"job_id": "once", "cron_expr": YEARLY, "default_params": {"sleep_sec": 0}})
    async with running_worker(fast_settings(settings, scope), {"once": (probe, ProbeParams)}):
        queued = await api.post("/jobs/once/run-now", json={"params": {"action": "by-api"}})
        assert queued.status_code == 202 and queued.json()["worker_live"] is True
        run_id = queued.json()["run_id"]

        async def finished() -> bool:
            runs = (await api.get("/jobs/once/runs", params={"limit": 5})).json()
            return any(r["run_id"] == run_id and r["status"] == "succeeded" for r in runs)

        await wait_until(finished, 20, "the manual run to succeed")
    runs = (await api.get("/jobs/once/runs")).json()
    assert runs[0]["trigger_source"] == "manual" and runs[0]["params"]["action"] == "by-api"


async def test_run_now_is_409_with_the_running_run_while_the_job_runs_unless_queued(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    scope = api_scope(api)
    await api.post("/jobs", json={"job_id": "slow", "cron_expr": YEARLY, "default_params": {"sleep_sec": 4}})
    async with running_worker(fast_settings(settings, scope), {"slow": (probe, ProbeParams)}):
        first = (await api.post("/jobs/slow/run-now")).json()

        async def running() -> bool:
            return any(r["status"] == "running" for r in (await api.get("/jobs/slow/runs")).json())

        await wait_until(running, 15, "the long run to start")
        refused = await api.post("/jobs/slow/run-now")
        assert refused.status_code == 409, refused.text
        assert refused.json()["run_id"] == first["run_id"] and refused.json()["since"]
        assert refused.json()["error"] == "conflict" and refused.json()["status"] == "running"
        assert len((await api.get("/jobs/slow/runs")).json()) == 1  # nothing was queued
        queued = await api.post("/jobs/slow/run-now", params={"queue": "true"})
        assert queued.status_code == 202 and queued.json()["run_id"] != first["run_id"]


async def test_backfill_is_202_and_counts_the_slots(api: httpx.AsyncClient) -> None:
    await api.post("/jobs", json={"job_id": "hourly", "interval_seconds": 3600, "align": True, "enabled": False})
    answered = await api.post("/jobs/hourly/backfill", json={"from": "now-3h", "to": "now-1h"})
    assert answered.status_code == 202, answered.text
    assert answered.json()["slots"] == answered.json()["published"] >= 2 and answered.json()["already_done"] == 0
    future = await api.post("/jobs/hourly/backfill", json={"from": "now-1h", "to": "2999-01-01T00:00"})
    assert future.status_code == 422 and future.json()["fields"] == ["to"]


async def test_dead_letters_are_listed_and_replayed(
    api: httpx.AsyncClient, settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    scope = api_scope(api)
    await api.post("/jobs", json={"job_id": "target", "cron_expr": YEARLY})
    async with running_worker(fast_settings(settings, scope), {"target": (probe, ProbeParams)}):
        channel = await amqp.channel()
        exchange = await channel.get_exchange(topology.exchange_name(scope))
        await exchange.publish(
            aio_pika.Message(b'{"job_id": "unknown-job"}'),
            routing_key=topology.work_queue_name(scope, "target"),
        )

        async def parked() -> bool:
            return (await api.get("/dead")).json()["total"] == 1

        await wait_until(parked, 15, "the unknown job's message to be parked")
        await channel.close()
    dead = (await api.get("/dead")).json()
    message = dead["messages"][0]
    assert message["reason"] == "unknown_job" and json.loads(message["body"]) == {"job_id": "unknown-job"}
    parked_id = message["message_id"]
    replayed = await api.post(f"/dead/{parked_id}/replay")
    assert replayed.status_code == 200 and replayed.json()["routing_key"] == topology.work_queue_name(scope, "target")
    assert (await api.get("/dead")).json()["total"] == 0
    assert (await api.post(f"/dead/{parked_id}/replay")).status_code == 404


async def test_tokens_401_without_403_for_a_viewers_change_and_the_audit_names_the_token(
    settings: Settings, cleanup_scope: str
) -> None:
    async with serving(settings, cleanup_scope, tokens=token_set()) as api:
        assert (await api.get("/healthz")).status_code == 200  # liveness needs no token
        missing = await api.get("/jobs")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (await api.get("/jobs", headers=bearer("not-a-token-at-all"))).status_code == 401
        assert (await api.get("/jobs", headers={"Authorization": f"Basic {VIEWER_TOKEN}"})).status_code == 401
        assert (await api.get("/jobs", headers=bearer(VIEWER_TOKEN))).status_code == 200
        body = {"job_id": "guarded", "cron_expr": YEARLY}
        forbidden = await api.post("/jobs", json=body, headers=bearer(VIEWER_TOKEN))
        assert forbidden.status_code == 403 and "watcher" in forbidden.json()["detail"]
        assert (await api.post("/alerts", json={"alerts": []}, headers=bearer(VIEWER_TOKEN))).status_code == 403
        assert (await api.post("/jobs", json=body, headers=bearer(OPERATOR_TOKEN))).status_code == 201
        paused = await api.post("/jobs/guarded/pause", json={"note": "n"}, headers=bearer(OPERATOR_TOKEN))
        assert paused.status_code == 200
        audit = (await api.get("/audit", headers=bearer(VIEWER_TOKEN))).json()
        assert [(e["actor"], e["action"]) for e in audit] == [("api:deployer", "pause"), ("api:deployer", "create")]
        for response in (missing, forbidden):
            assert VIEWER_TOKEN not in response.text and OPERATOR_TOKEN not in response.text


async def test_a_change_from_another_sites_page_is_refused(api: httpx.AsyncClient) -> None:
    await api.post("/jobs", json={"job_id": "alpha", "cron_expr": YEARLY})
    refused = await api.post("/jobs/alpha/pause", headers={"Origin": "https://elsewhere.example"})
    assert refused.status_code == 403 and (await api.get("/jobs/alpha")).json()["job"]["enabled"] is True


async def test_alerts_go_to_the_notifier_one_line_each_and_are_answered_200_without_one(
    settings: Settings, cleanup_scope: str
) -> None:
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "SchedulerJobFailingRepeatedly", "job_id": "a"},
             "annotations": {"summary": "a failed 3 times"}},
            {"status": "resolved", "labels": {"alertname": "SchedulerJobNoRecentSuccess", "job_id": "b"},
             "annotations": {"summary": "b is late"}},
        ],
    }  # fmt: skip
    recorder = Recorder()
    async with serving(settings, cleanup_scope, notifier=recorder, connected=False) as api:
        assert recorder.started
        answered = await api.post("/alerts", json=payload)
        assert answered.status_code == 200 and answered.json()["forwarded"] is True
    assert recorder.stopped
    assert recorder.lines == [
        "FIRING SchedulerJobFailingRepeatedly job=a: a failed 3 times",
        "RESOLVED SchedulerJobNoRecentSuccess job=b: b is late",
    ]
    async with serving(settings, cleanup_scope, connected=False) as api:
        alone = await api.post("/alerts", json=payload)
        assert alone.status_code == 200 and alone.json() == {"forwarded": False, "lines": recorder.lines}


async def test_healthz_and_the_openapi_document(api: httpx.AsyncClient) -> None:
    health = (await api.get("/healthz")).json()
    assert health == {"status": "ok", "scope": api_scope(api), "postgres": "up", "rabbitmq": "up"}
    document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/runs", "/jobs/{job_id}/run-now", "/jobs/{job_id}/pause",
                 "/jobs/{job_id}/resume", "/jobs/{job_id}/backfill", "/dead", "/dead/{message_id}/replay", "/audit",
                 "/healthz", "/alerts"):  # fmt: skip
        assert path in paths, path
    assert set(paths["/jobs/{job_id}"]) == {"get", "patch", "delete"}
    assert "409" in paths["/jobs/{job_id}/run-now"]["post"]["responses"]
    assert (await api.get("/docs")).status_code == 200
    await asyncio.sleep(0)
