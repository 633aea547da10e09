"""Runtime changes survive a deploy: `seed` over the live definitions keeps what `pause` and `set` changed,
applies what the file changed, prints where the two differ, and `seed --reset` puts the file back. Every step
is read back from PostgreSQL (rows, audit) and RabbitMQ (the delay queue that carries the chain)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from scheduler_seed.cli import amain
from shared import topology
from shared.control import Control
from shared.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOURLY = 3600  # a chain that never fires during a test


@pytest.fixture
async def control(settings: Settings, cleanup_scope: str) -> AsyncIterator[Control]:
    async with Control(settings, cleanup_scope) as opened:
        yield opened


async def seed_cli(capsys: pytest.CaptureFixture[str], settings: Settings, scope: str, *args: str) -> tuple[int, str]:
    code = await amain([*args, "--scope", scope], settings)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out + captured.err


def write_jobs(path: Path, timeout_sec: int, description: str) -> Path:
    path.write_text(
        f'[jobs.tick]\ninterval_seconds = {HOURLY}\ntimeout_sec = {timeout_sec}\ndescription = "{description}"\n'
        f"[jobs.other]\ninterval_seconds = {HOURLY}\n"
    )
    return path


async def delay_depth(settings: Settings, scope: str, job_id: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.delay_queue_name(scope, job_id), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


def drift_row(out: str, job_id: str, field: str) -> str:
    """The drift table's line for (job, field), or '' when there is none."""
    _, _, table = out.partition("\ndrift: ")
    found = re.search(rf"^{job_id}\s+{field}\s+.*$", table, re.M)
    return found.group(0) if found else ""


async def test_pause_and_set_survive_a_seed_as_drift_and_reset_restores_the_file(
    settings: Settings,
    control: Control,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scope = control.scope
    monkeypatch.setenv("SCHEDULER_ACTOR", "deploy-pipeline")
    path = write_jobs(tmp_path / "jobs.toml", timeout_sec=60, description="first words")
    code, out = await seed_cli(capsys, settings, scope, "seed", "--file", str(path))
    assert code == 0, out
    seeded_epoch = (await control.job("tick")).epoch

    # runtime changes, from the CLI
    assert (await seed_cli(capsys, settings, scope, "pause", "tick", "--note", "broker maintenance"))[0] == 0
    changed = await seed_cli(capsys, settings, scope, "set", "tick", "--timeout", "30", "--run-on-startup", "true")
    assert changed[0] == 0, changed[1]
    paused_epoch = (await control.job("tick")).epoch

    # a deploy: the file edited meanwhile (the description only the file touched; the timeout both touched)
    write_jobs(path, timeout_sec=45, description="second words")
    code, out = await seed_cli(capsys, settings, scope, "seed", "--file", str(path))
    assert code == 0, out
    row = await control.job("tick")
    assert (row.enabled, row.pause_note) == (False, "broker maintenance")  # still paused, with its note
    assert (row.timeout_sec, row.run_on_startup) == (30, True)  # the runtime values stay
    assert row.description == "second words"  # a file edit nobody changed at runtime applies
    assert row.epoch == paused_epoch and await delay_depth(settings, scope, "tick") == 0  # no chain started
    assert re.search(r"^tick\s+tick\s+changed\s+kept\s+\d+\s+disabled\s+.*3 kept$", out, re.M), out
    assert re.search(r"^other\s+other\s+unchanged\s+kept\s", out, re.M), out
    assert "drift: the live definition differs from the file" in out
    assert re.search(r"\btrue\s+false\s+live kept$", drift_row(out, "tick", "enabled")), out
    assert re.search(r"\b45\.0\s+30\.0\s+live kept; edited in the file since the last seed too$",
                     drift_row(out, "tick", "timeout_sec")), out  # fmt: skip
    assert re.search(r"\bfalse\s+true\s+live kept$", drift_row(out, "tick", "run_on_startup")), out
    assert drift_row(out, "tick", "description") == "" and drift_row(out, "other", r"\S+") == ""

    # a second seed of the same file changes nothing and still reports the drift
    code, again = await seed_cli(capsys, settings, scope, "seed", "--file", str(path))
    assert code == 0 and drift_row(again, "tick", "timeout_sec") != ""
    assert re.search(r"^tick\s+tick\s+unchanged\s+kept\s", again, re.M), again
    assert (await control.job("tick")).epoch == paused_epoch

    # --reset JOB: the file's values come back, the job runs again on a fresh chain
    code, out = await seed_cli(
        capsys, settings, scope, "seed", "--file", str(path), "--reset", "tick", "--note", "CR-7"
    )
    assert code == 0, out
    row = await control.job("tick")
    assert (row.enabled, row.pause_note, row.timeout_sec, row.run_on_startup) == (True, None, 45, False)
    assert row.epoch > paused_epoch and await delay_depth(settings, scope, "tick") == 1
    assert re.search(r"^tick\s+tick\s+re-enabled\s+started\s", out, re.M), out
    assert re.search(r"\btrue\s+false\s+reset to the file$", drift_row(out, "tick", "enabled")), out
    code, clean = await seed_cli(capsys, settings, scope, "seed", "--file", str(path))
    assert code == 0 and "drift:" not in clean and (await control.job("tick")).epoch == row.epoch

    # the audit: who, when, what, before and after, and the note, for the runtime changes, the seeds and the reset
    entries = list(reversed(await control.audit(limit=50, job_id="tick")))
    assert [e.action for e in entries] == ["seed", "pause", "set", "seed", "reset"]
    assert {e.actor for e in entries} == {"deploy-pipeline"}
    created, pause, set_, seed, reset = entries
    assert created.before is None and created.after is not None and created.after["timeout_sec"] == 60
    assert (pause.before, pause.after, pause.note) == (
        {"enabled": True, "pause_note": None}, {"enabled": False, "pause_note": "broker maintenance"},
        "broker maintenance",
    )  # fmt: skip
    assert set_.after == {"timeout_sec": 30, "run_on_startup": True}
    assert (seed.before, seed.after) == ({"description": "first words"}, {"description": "second words"})
    assert seed.note == f"from {path}"
    assert reset.note == "CR-7" and reset.after == {
        "enabled": True, "pause_note": None, "timeout_sec": 45, "run_on_startup": False
    }  # fmt: skip
    assert seeded_epoch < paused_epoch < row.epoch
    summaries = [e.after for e in await control.audit(limit=50) if e.action == "seed" and e.job_id is None]
    clean_seed, reset_seed, again_seed, kept_seed, _first = summaries  # newest first
    drifted = {"tick": ["enabled", "timeout_sec", "run_on_startup"]}
    assert kept_seed is not None and (kept_seed["drift"], kept_seed["reset"]) == (drifted, [])
    assert again_seed is not None and again_seed["drift"] == drifted
    assert reset_seed is not None and (reset_seed["drift"], reset_seed["reset"]) == ({}, ["tick"])
    assert clean_seed is not None and clean_seed["drift"] == {}


async def test_reset_of_a_job_the_file_does_not_have_is_refused_and_changes_nothing(
    settings: Settings, control: Control, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jobs(tmp_path / "jobs.toml", timeout_sec=60, description="words")
    assert (await seed_cli(capsys, settings, control.scope, "seed", "--file", str(path)))[0] == 0
    await control.pause("tick")
    code, out = await seed_cli(capsys, settings, control.scope, "seed", "--file", str(path), "--reset", "tick", "nope")
    assert code == 2 and "error: seed --reset: 'nope' not in" in out, out
    assert (await control.job("tick")).enabled is False  # the named job that exists was not reset either


async def test_a_job_created_at_runtime_keeps_its_values_when_a_file_declares_it(
    settings: Settings, control: Control, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No seed recorded: every difference counts as a runtime change (kept, reported) until `--reset`."""
    await control.put({"job_id": "tick", "interval_seconds": HOURLY, "timeout_sec": 20})
    epoch = (await control.job("tick")).epoch
    path = write_jobs(tmp_path / "jobs.toml", timeout_sec=60, description="words")
    code, out = await seed_cli(capsys, settings, control.scope, "seed", "--file", str(path))
    assert code == 0, out
    row = await control.job("tick")
    assert (row.timeout_sec, row.description, row.epoch) == (20, "", epoch)
    assert drift_row(out, "tick", "timeout_sec") and drift_row(out, "tick", "description")
    code, out = await seed_cli(capsys, settings, control.scope, "seed", "--file", str(path), "--reset")
    assert code == 0, out
    row = await control.job("tick")
    assert (row.timeout_sec, row.description, row.epoch) == (60, "words", epoch)  # the chain did not need replacing


async def test_the_cli_warns_about_an_unknown_scheduler_variable_in_one_line(
    settings: Settings, cleanup_scope: str
) -> None:
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_SCOPE": cleanup_scope,
        "SCHEDULER_RUN_IMEDIATELY": "true",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler_seed", "status", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert err.decode().splitlines() == [
        "warning: unknown environment variable ignored: SCHEDULER_RUN_IMEDIATELY "
        "(did you mean SCHEDULER_RUN_IMMEDIATELY?)"
    ]
