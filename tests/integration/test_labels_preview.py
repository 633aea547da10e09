"""Previews, labels with selectors and bulk actions, and the DST outlook, on the real servers: the CLI in this
process and the HTTP API (the app in this process), everything read back from PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from shared import topology
from shared.control import Control
from shared.settings import Settings
from tests.integration.test_cli import cli_here
from tests.support.api import serving
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # a chain that never fires during a test


@pytest.fixture
async def api(settings: Settings, cleanup_scope: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, cleanup_scope) as client:
        yield client


async def world(pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, scope: str, job_id: str) -> Any:
    """Everything a change could touch: the job row, the audit, the runs, the waiting chain message."""
    row = await pool.fetchrow("SELECT * FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", scope, job_id)
    audit = await pool.fetchval("SELECT count(*) FROM scheduler.audit WHERE scope = $1", scope)
    runs = await pool.fetchval("SELECT count(*) FROM scheduler.job_runs WHERE scope = $1", scope)
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(topology.delay_queue_name(scope, job_id), passive=True)
        waiting = queue.declaration_result.message_count
    finally:
        await channel.close()
    return dict(row), audit, runs, waiting


async def test_set_preview_lists_slots_that_appear_and_disappear_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    cleanup_scope: str,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    api: httpx.AsyncClient,
) -> None:
    scope = cleanup_scope
    async with Control(settings, scope) as control:
        await control.put({"job_id": "hourly", "cron_expr": "0 * * * *"})
    before = await world(pool, amqp, scope, "hourly")
    assert before[3] == 1  # the chain's waiting message

    done = await cli_here(capsys, settings, scope, "set", "hourly", "--cron", "15 * * * *", "--preview",
                          "--preview-count", "4")  # fmt: skip
    assert done.code == 0, done.err
    assert "nothing changed" in done.out and "cron_expr: '0 * * * *' -> '15 * * * *'" in done.out
    added = [line for line in done.out.splitlines() if line.strip().startswith("+ ")]
    gone = [line for line in done.out.splitlines() if line.strip().startswith("- ")]
    # hourly at :00 -> hourly at :15, four slots each, compared up to the earlier last slot: 7 of the 8 differ
    # (before :15 the four :15 and three :00; after it the other way round)
    assert len(added) + len(gone) == 7 and min(len(added), len(gone)) == 3, done.out
    assert all(":15:00Z" in line for line in added) and all(":00:00Z" in line for line in gone), done.out

    answer = await api.patch("/jobs/hourly?dry_run=true&preview_count=6", json={"cron_expr": "*/30 * * * *"})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["changes"] == {"cron_expr": ["0 * * * *", "*/30 * * * *"]}
    slots = found["slots"]
    assert len(slots["before"]) == len(slots["after"]) == 6
    assert slots["disappear"] == [] and len(slots["appear"]) == 3
    assert all(datetime.fromisoformat(s).minute == 30 for s in slots["appear"])

    bad = await cli_here(capsys, settings, scope, "set", "hourly", "--dst-gap", "later", "--preview")
    assert bad.code == 2 and "dst_gap" in bad.error_line
    assert (await api.patch("/jobs/hourly?dry_run=true", json={"cron_expr": "61 * * * *"})).status_code == 422

    assert await world(pool, amqp, scope, "hourly") == before  # no row, no audit, no message changed


async def labelled(control: Control) -> None:
    for job_id, labels in (
        ("bill-a", {"team": "billing"}),
        ("bill-b", {"team": "billing", "tier": "web"}),
        ("ops-c", {"team": "ops"}),
        ("plain-d", {}),
    ):
        await control.put({"job_id": job_id, "cron_expr": YEARLY, "labels": labels})


async def enabled(pool: asyncpg.Pool, scope: str) -> dict[str, bool]:
    rows = await pool.fetch("SELECT job_id, enabled FROM scheduler.jobs WHERE scope = $1", scope)
    return {r["job_id"]: r["enabled"] for r in rows}


async def audited(pool: asyncpg.Pool, scope: str, action: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT job_id, actor FROM scheduler.audit WHERE scope = $1 AND action = $2 ORDER BY job_id", scope, action
    )
    return [(r["job_id"], r["actor"]) for r in rows]


async def test_cli_selector_pauses_resumes_runs_and_lists_the_jobs_it_picks(
    capsys: pytest.CaptureFixture[str], settings: Settings, cleanup_scope: str, pool: asyncpg.Pool
) -> None:
    scope = cleanup_scope
    async with Control(settings, scope) as control:
        await labelled(control)
    row = await pool.fetchrow("SELECT labels FROM scheduler.jobs WHERE scope = $1 AND job_id = 'bill-b'", scope)
    assert row is not None and row["labels"] == {"team": "billing", "tier": "web"}

    done = await cli_here(capsys, settings, scope, "pause", "--selector", "team=billing,tier!=web", "--note", "audit")
    assert done.code == 0, done.err
    assert "bill-a" in done.out and "bill-b" not in done.out and "1 jobs matching" in done.out
    assert await enabled(pool, scope) == {"bill-a": False, "bill-b": True, "ops-c": True, "plain-d": True}
    assert [job for job, _ in await audited(pool, scope, "pause")] == ["bill-a"]

    listed = await cli_here(capsys, settings, scope, "status", "--selector", "team", "--json")
    assert listed.code == 0, listed.err
    assert sorted(s["job_id"] for s in json.loads(listed.out)) == ["bill-a", "bill-b", "ops-c"]
    assert {s["job_id"]: s["labels"] for s in json.loads(listed.out)}["ops-c"] == {"team": "ops"}

    done = await cli_here(capsys, settings, scope, "resume", "-l", "team=billing")
    assert done.code == 0 and "2 jobs matching" in done.out, done.out
    assert all((await enabled(pool, scope)).values())
    assert [job for job, _ in await audited(pool, scope, "resume")] == ["bill-a", "bill-b"]

    done = await cli_here(capsys, settings, scope, "run-now", "--selector", "!team")
    assert done.code == 0 and "plain-d" in done.out, done.out
    runs = await audited(pool, scope, "run-now")
    assert [job for job, _ in runs] == ["plain-d"]

    nothing = await cli_here(capsys, settings, scope, "pause", "--selector", "team=nobody")
    assert nothing.code == 0 and "no job matches" in nothing.out

    # one clear error, nothing changed
    before = await pool.fetchval("SELECT count(*) FROM scheduler.audit WHERE scope = $1", scope)
    for args in (("pause", "--selector", "team=bill ing"), ("pause", "bill-a", "--selector", "team"), ("resume",)):
        bad = await cli_here(capsys, settings, scope, *args)
        assert bad.code == 2, (args, bad)
        assert bad.error_line.startswith("error: ")
    assert await pool.fetchval("SELECT count(*) FROM scheduler.audit WHERE scope = $1", scope) == before
    assert all((await enabled(pool, scope)).values())


async def test_api_bulk_actions_answer_one_result_per_job(
    settings: Settings, cleanup_scope: str, pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    scope = cleanup_scope
    async with Control(settings, scope) as control:
        await labelled(control)

    paused = await api.post("/jobs:pause", params={"selector": "team=billing"}, json={"note": "month end"})
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["action"] == "pause" and body["selector"] == "team=billing"
    assert [(i["job_id"], i["ok"]) for i in body["items"]] == [("bill-a", True), ("bill-b", True)]
    assert await enabled(pool, scope) == {"bill-a": False, "bill-b": False, "ops-c": True, "plain-d": True}
    assert [job for job, _ in await audited(pool, scope, "pause")] == ["bill-a", "bill-b"]
    notes = await pool.fetch("SELECT pause_note FROM scheduler.jobs WHERE scope = $1 AND NOT enabled", scope)
    assert {r["pause_note"] for r in notes} == {"month end"}

    listed = await api.get("/jobs", params={"selector": "team!=billing"})
    assert sorted(j["job_id"] for j in listed.json()) == ["ops-c", "plain-d"]

    resumed = await api.post("/jobs:resume", params={"selector": "team in (billing)"})
    assert resumed.status_code == 422 and "selector" in resumed.text
    resumed = await api.post("/jobs:resume", params={"selector": "team=billing"})
    assert resumed.status_code == 200 and all(i["ok"] for i in resumed.json()["items"])

    await api.patch("/jobs/ops-c", json={"default_params": {"sleep_sec": 4}})
    async with running_worker(fast_settings(settings, scope), {"ops-c": (probe, ProbeParams)}):
        ran = await api.post("/jobs:run-now", params={"selector": "team=ops"}, json={"params": {"x": 1}})
        assert ran.status_code == 202, ran.text
        (item,) = ran.json()["items"]
        assert item["job_id"] == "ops-c" and item["ok"] and item["run_id"]

        async def running() -> bool:
            return any(r["status"] == "running" for r in (await api.get("/jobs/ops-c/runs")).json())

        await wait_until(running, 15, "the long run to start")
        # a job running now is that job's failed item (conflict), not an error of the whole request
        again = await api.post("/jobs:run-now", params={"selector": "team=ops"})
        (item,) = again.json()["items"]
        assert again.status_code == 202 and not item["ok"] and item["error_kind"] == "conflict", again.text
        assert item["job_id"] == "ops-c" and "running" in item["detail"]


async def test_status_shows_the_next_transition_and_the_slots_around_it(
    settings: Settings, cleanup_scope: str, api: httpx.AsyncClient
) -> None:
    async with Control(settings, cleanup_scope) as control:
        await control.put({"job_id": "dublin", "cron_expr": "30 1 * * *", "timezone": "Europe/Dublin",
                           "dst_overlap": "both", "dst_gap": "skip"})  # fmt: skip
        await control.put({"job_id": "tick", "interval_seconds": 3600})
    detail = (await api.get("/jobs/dublin")).json()
    assert detail["job"]["dst_gap"] == "skip" and detail["job"]["dst_overlap"] == "both"
    change = detail["status"]["dst"]
    assert change["zone"] == "Europe/Dublin" and change["kind"] in ("gap", "overlap")
    assert (change["dst_gap"], change["dst_overlap"]) == ("skip", "both")
    at = datetime.fromisoformat(change["at"])
    assert change["slots_after"] and all(datetime.fromisoformat(s) >= at for s in change["slots_after"])
    assert all(datetime.fromisoformat(s) < at for s in change["slots_before"])
    tick = (await api.get("/jobs/tick")).json()
    assert tick["status"]["dst"] is None  # an interval is absolute time


async def test_labels_and_the_dst_rule_come_from_the_jobs_file_and_a_runtime_change_is_drift(
    capsys: pytest.CaptureFixture[str], settings: Settings, cleanup_scope: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    scope = cleanup_scope
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[jobs.nightly]\ncron_expr = "30 1 * * *"\ntimezone = "Europe/Dublin"\ndst_overlap = "both"\n'
        'labels = { team = "billing", tier = "batch" }\n'
    )
    done = await cli_here(capsys, settings, scope, "seed", "--file", str(path))
    assert done.code == 0, done.err
    row = await pool.fetchrow("SELECT labels, dst_gap, dst_overlap FROM scheduler.jobs WHERE scope = $1", scope)
    assert row is not None and dict(row) == {"labels": {"team": "billing", "tier": "batch"}, "dst_gap": None,
                                             "dst_overlap": "both"}  # fmt: skip
    done = await cli_here(capsys, settings, scope, "set", "nightly", "--labels", '{"team": "payments"}')
    assert done.code == 0, done.err
    again = await cli_here(capsys, settings, scope, "seed", "--file", str(path))
    assert again.code == 0 and "labels" in again.out.partition("drift")[2], again.out
    assert await pool.fetchval("SELECT labels FROM scheduler.jobs WHERE scope = $1", scope) == {"team": "payments"}
    reset = await cli_here(capsys, settings, scope, "seed", "--file", str(path), "--reset")
    assert reset.code == 0, reset.err
    assert await pool.fetchval("SELECT labels FROM scheduler.jobs WHERE scope = $1", scope) == {
        "team": "billing",
        "tier": "batch",
    }


async def test_a_timed_pause_by_selector_sets_when_each_job_resumes(
    capsys: pytest.CaptureFixture[str], settings: Settings, cleanup_scope: str, pool: asyncpg.Pool
) -> None:
    scope = cleanup_scope
    async with Control(settings, scope) as control:
        await labelled(control)
    asked = datetime.now(UTC)
    done = await cli_here(capsys, settings, scope, "pause", "--selector", "team=billing", "--until", "2h")
    assert done.code == 0 and "resumes by itself" in done.out, done.out
    rows = await pool.fetch("SELECT job_id, enabled, paused_until FROM scheduler.jobs WHERE scope = $1", scope)
    until = {r["job_id"]: r["paused_until"] for r in rows if not r["enabled"]}
    assert sorted(until) == ["bill-a", "bill-b"]
    assert all(timedelta(hours=2) <= at - asked < timedelta(hours=2, minutes=1) for at in until.values()), until
    bad = await cli_here(capsys, settings, scope, "pause", "--selector", "team=ops", "--until", "someday")
    assert bad.code == 2 and "--until" in bad.error_line
    assert (await enabled(pool, scope))["ops-c"] is True
