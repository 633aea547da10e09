"""Every change through the control layer is an audit row: who, when, what, the fields before and after, the note;
the CLI's `audit` verb reads them back, naming the operator."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator

import pytest

from shared.control import Control
from shared.settings import Settings
from tests.support.runtime import ROOT

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"


@pytest.fixture
async def control(settings: Settings, cleanup_scope: str) -> AsyncIterator[Control]:
    async with Control(settings, cleanup_scope, actor="alice") as opened:
        yield opened


async def test_each_change_is_recorded_with_its_actor_fields_and_note(control: Control) -> None:
    await control.put({"job_id": "tick", "cron_expr": YEARLY})
    await control.pause("tick", note="broker maintenance")
    await control.set("tick", {"interval_seconds": 3600})
    await control.resume("tick")
    queued = await control.run_now("tick")
    await control.delete("tick")

    entries = list(reversed(await control.audit()))
    assert [e.action for e in entries] == ["create", "pause", "set", "resume", "run-now", "delete"]
    assert {e.actor for e in entries} == {"alice"} and {e.job_id for e in entries} == {"tick"}
    create, pause, set_, resume, run_now, delete = entries
    assert create.before is None and create.after is not None and create.after["cron_expr"] == YEARLY
    assert pause.before == {"enabled": True, "pause_note": None}
    assert pause.after == {"enabled": False, "pause_note": "broker maintenance"}
    assert pause.note == "broker maintenance"
    assert set_.before == {"cron_expr": YEARLY, "interval_seconds": None}  # only what changed
    assert set_.after == {"cron_expr": None, "interval_seconds": 3600}
    assert resume.after == {"enabled": True, "pause_note": None}
    assert run_now.after is not None and run_now.after["run_id"] == str(queued.run_id)
    assert delete.after is None and delete.before is not None and delete.before["interval_seconds"] == 3600
    assert [e.at for e in entries] == sorted(e.at for e in entries)


async def test_audit_of_one_job_and_a_limit(control: Control) -> None:
    await control.put({"job_id": "a", "cron_expr": YEARLY})
    await control.put({"job_id": "b", "cron_expr": YEARLY})
    await control.pause("a")
    assert [e.action for e in await control.audit(job_id="a")] == ["pause", "create"]
    assert len(await control.audit(limit=1)) == 1


async def test_an_unchanged_update_records_no_field(control: Control) -> None:
    await control.put({"job_id": "same", "cron_expr": YEARLY})
    await control.put({"job_id": "same", "cron_expr": YEARLY})
    latest = (await control.audit(limit=1))[0]
    assert (latest.action, latest.before, latest.after) == ("update", {}, {})


async def test_the_cli_names_the_operator_and_reads_the_trail(settings: Settings, cleanup_scope: str) -> None:
    async def cli(*args: str, actor: str | None = None) -> tuple[int, str]:
        env = {
            **os.environ,
            "AMQP_URL": settings.amqp_url.get_secret_value(),
            "DATABASE_URL": settings.database_url.get_secret_value(),
            "SCHEDULER_SCOPE": cleanup_scope,
        }
        env.pop("SCHEDULER_ACTOR", None)
        if actor is not None:
            env["SCHEDULER_ACTOR"] = actor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scheduler_seed", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return proc.returncode, out.decode()

    async with Control(settings, cleanup_scope) as control:
        await control.put({"job_id": "tick", "cron_expr": YEARLY})
    await cli("pause", "tick", "--note", "deploy freeze", actor="deploy-bot")
    await cli("resume", "tick")
    _, out = await cli("audit", "tick", "--json")
    entries = json.loads(out)
    operator = f"cli:{getpass.getuser()}"  # the same environment the CLI process got
    assert [(e["action"], e["actor"]) for e in entries[:2]] == [("resume", operator), ("pause", "deploy-bot")]
    assert entries[1]["note"] == "deploy freeze"
    _, table = await cli("audit")
    assert "deploy-bot" in table and "enabled: true -> false" in table
