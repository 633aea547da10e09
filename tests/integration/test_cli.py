"""`python -m scheduler_seed` end to end on the real servers: the CLI as a real process (or in-process through
`amain`), workers in this process, every assertion read back from RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from scheduler_seed.cli import amain
from services.mock_executor import MockParams, mock_run
from shared.settings import Settings
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOCK_FILE = ROOT / "deploy" / "jobs" / "mock.toml"
YEARLY = "0 0 1 1 *"  # a chain that never fires during a test: runs come from the CLI only


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a failed command prints (asserting there is exactly one and no traceback)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in self.err, self.err
        return lines[0]


async def cli(settings: Settings, scope: str, *args: str, timeout: float = 120) -> Result:
    """The CLI as an operator runs it: a process, configured by the environment (scope from SCHEDULER_SCOPE)."""
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_SCOPE": scope,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler_seed", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def cli_here(capsys: pytest.CaptureFixture[str], settings: Settings, scope: str, *args: str) -> Result:
    """The same command in this process (faster; no process start-up)."""
    code = await amain([*args, "--scope", scope], settings)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def jobs_file(tmp_path: Path, jobs: dict[str, dict[str, Any]]) -> Path:
    """A jobs file with these tables (values written as TOML by hand: strings, numbers, booleans, tables)."""
    lines = []
    for job_id, table in jobs.items():
        lines.append(f"[jobs.{job_id}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path = tmp_path / "jobs.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


async def count(control: Control, job_id: str, status: str | None = None, after: datetime | None = None) -> int:
    rows = await control.runs(job_id)
    return sum(
        1 for r in rows if (status is None or r["status"] == status) and (after is None or r["scheduled_for"] > after)
    )


def now() -> datetime:
    return datetime.now(UTC)


# -- seed ------------------------------------------------------------------------------------------------------


async def test_seeding_the_mock_file_twice_leaves_one_chain_per_job(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    first = await cli(settings, scope, "seed", "--file", str(MOCK_FILE))
    second = await cli(settings, scope, "seed", "--file", str(MOCK_FILE))
    assert first.code == second.code == 0, first.err + second.err
    assert "seeded 10 jobs" in second.out and second.out.count("unchanged") == 10
    assert len(re.findall(r"\bunchanged\s+kept\b", second.out)) == 10, second.out  # no chain needlessly replaced
    definitions = tomllib.loads(MOCK_FILE.read_text())["jobs"]
    queues = {definition["queue"] for definition in definitions.values()}
    handlers = {queue: (mock_run, MockParams) for queue in queues}
    async with running_worker(fast_settings(settings, scope), handlers):
        await wait_until(lambda: _ran(control, "position-management", 3), 30, "3 runs of the 3 s job")
        await wait_until(lambda: _ran(control, "buy-scanner", 2), 30, "2 runs of the 5 s job")
    rows = await control.runs()
    assert slots_run_more_than_once(rows) == []
    # the second seed of an unchanged file keeps the first seed's chain (it used to replace it with epoch 2)
    assert {r["epoch"] for r in rows if r["trigger_source"] == "scheduler"} == {1}

    status = await cli(settings, scope, "status")
    assert status.code == 0
    assert re.search(r"^buy-scanner\s+yes\s+every 5 s", status.out, re.M), status.out
    assert re.search(r"^daily-pipeline-cases\s+yes\s+on event or by hand", status.out, re.M), status.out
    listed = {job["job_id"]: job for job in json.loads((await cli(settings, scope, "status", "--json")).out)}
    assert set(listed) == set(definitions)
    scanner = listed["buy-scanner"]
    assert len(scanner["next_slots"]) == 3 and scanner["last_status"] in ("succeeded", "failed")
    assert scanner["last_lateness_ms"] is not None and scanner["running"] in (0, 1)
    assert listed["scout-daily"]["schedule"] == "cron '* * * * *' in UTC"
    assert listed["daily-pipeline-cases"]["next_slots"] == []


async def _ran(control: Control, job_id: str, n: int) -> bool:
    return await count(control, job_id) >= n


async def test_seed_reports_jobs_missing_from_the_file_and_prune_disables_them(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    both = jobs_file(tmp_path, {"keep": {"cron_expr": YEARLY}, "gone": {"cron_expr": YEARLY}})
    assert (await cli_here(capsys, settings, scope, "seed", "--file", str(both))).code == 0
    only_keep = jobs_file(tmp_path, {"keep": {"cron_expr": YEARLY}})

    reported = await cli_here(capsys, settings, scope, "seed", "--file", str(only_keep))
    assert reported.code == 0
    assert "job 'gone' is in the database but not in" in reported.out and "still enabled" in reported.out
    assert (await control.job("gone"))["enabled"] is True  # reported, never silently changed

    pruned = await cli_here(capsys, settings, scope, "seed", "--file", str(only_keep), "--prune")
    assert pruned.code == 0 and "disabled (--prune)" in pruned.out
    gone = await control.job("gone")
    assert gone["enabled"] is False and gone["pause_note"].startswith("pruned")
    assert (await control.job("keep"))["enabled"] is True


async def test_seed_after_editing_a_cadence_takes_effect_at_once(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    slow = jobs_file(tmp_path, {"tick": {"interval_seconds": 3600}})
    assert (await cli_here(capsys, settings, scope, "seed", "--file", str(slow))).code == 0
    async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
        fast = jobs_file(tmp_path, {"tick": {"interval_seconds": 1}})
        edited = await cli_here(capsys, settings, scope, "seed", "--file", str(fast))
        assert edited.code == 0 and re.search(r"^tick\s+tick\s+changed", edited.out, re.M), edited.out
        await wait_until(lambda: _ran(control, "tick", 3), 20, "3 runs at the new 1 s cadence")
    rows = [r for r in await control.runs("tick") if r["status"] == "succeeded"]
    gaps = {(b["scheduled_for"] - a["scheduled_for"]).total_seconds() for a, b in itertools.pairwise(rows)}
    assert gaps == {1.0}
    assert slots_run_more_than_once(rows) == []


# -- run-now, publish ------------------------------------------------------------------------------------------


async def test_run_now_refuses_a_running_job_with_exit_3_and_wait_reports_the_outcome(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="slowpoke", cron_expr=YEARLY, max_attempts=1)
    async with running_worker(fast_settings(settings, scope), {"slowpoke": (probe, ProbeParams)}):
        started = await cli(settings, scope, "run-now", "slowpoke", "--params", '{"sleep_sec": 4}')
        assert started.code == 0 and "queued run" in started.out
        await wait_until(lambda: _running(control, "slowpoke"), 15, "the long run to start")

        refused = await cli(settings, scope, "run-now", "slowpoke")
        assert refused.code == 3
        assert "'slowpoke' is running now" in refused.error_line and "--queue" in refused.error_line
        assert await count(control, "slowpoke") == 1  # nothing was queued

        await wait_until(lambda: _ran_all(control, "slowpoke"), 20, "the long run to finish")
        ok = await cli(settings, scope, "run-now", "slowpoke", "--wait")
        assert ok.code == 0 and re.search(r"run \S+ succeeded \(attempt 1", ok.out), ok.out

        failed = await cli(settings, scope, "run-now", "slowpoke", "--wait", "--params", '{"fail_until_attempt": 1}')
        assert failed.code == 1 and "failed" in failed.out and "probe failure on attempt 1" in failed.out


async def _running(control: Control, job_id: str) -> bool:
    return await count(control, job_id, "running") == 1


async def _ran_all(control: Control, job_id: str) -> bool:
    rows = await control.runs(job_id)
    return bool(rows) and all(r["finished_at"] is not None for r in rows)


async def test_published_job_id_gives_exactly_one_manual_run_with_default_params(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="hand", cron_expr=YEARLY, default_params={"mark_dir": str(tmp_path), "action": "dflt"})
    async with running_worker(fast_settings(settings, scope), {"hand": (probe, ProbeParams)}):
        published = await cli(settings, scope, "publish", "--job", "hand")
        assert published.code == 0
        assert f"exchange {scope}.jobs with routing key {scope}.jobs.hand" in published.out
        await wait_until(lambda: _ran_all(control, "hand"), 15, "the manual run")
        await asyncio.sleep(0.5)  # room for a wrong second run to show up
    (row,) = await control.runs("hand")
    assert row["trigger_source"] == "manual" and row["epoch"] is None and row["status"] == "succeeded"
    assert marks(tmp_path) == [["hand", "dflt"]]


def marks(directory: Path) -> list[list[str]]:
    """What each probe run wrote into `directory`: job id and action."""
    return [mark.read_text().split()[:2] for mark in directory.iterdir()]


# -- dead ------------------------------------------------------------------------------------------------------


async def test_garbage_and_unknown_jobs_are_parked_listed_without_consuming_and_replayed_after_a_fix(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="hand", cron_expr=YEARLY)
    async with running_worker(fast_settings(settings, scope), {"hand": (probe, ProbeParams)}):
        for body in ("[1, 2]", '{"job_id": "ghost"}'):
            assert (await cli_here(capsys, settings, scope, "publish", "--job", "hand", "--body", body)).code == 0
        await wait_until(lambda: _parked(capsys, settings, scope, 2), 15, "2 parked messages")
        for _ in range(2):  # listing twice: nothing was consumed
            listed = await cli_here(capsys, settings, scope, "dead")
            assert listed.code == 0 and "2 parked" in listed.out
        (ghost_line,) = [line for line in listed.out.splitlines() if "unknown_job" in line]
        assert "no job 'ghost'" in ghost_line and '{"job_id": "ghost"}' in ghost_line
        assert any(line.split()[1:3] == ["schema", "hand"] for line in listed.out.splitlines()[1:])

        missing = await cli_here(capsys, settings, scope, "dead", "--replay", "0123456789ab")
        assert missing.code == 2 and "no parked message with id" in missing.error_line

        await control.seed(job_id="ghost", queue="hand", cron_expr=YEARLY)  # the fix: the job exists now
        replayed = await cli_here(capsys, settings, scope, "dead", "--replay", ghost_line.split()[0])
        assert replayed.code == 0 and f"to {scope}.jobs.hand" in replayed.out
        await wait_until(lambda: _ran_all(control, "ghost"), 15, "the replayed run")
        assert await _parked(capsys, settings, scope, 1)

        purged = await cli_here(capsys, settings, scope, "dead", "--purge")
        assert purged.code == 0 and "purged 1" in purged.out
        assert "no parked messages" in (await cli_here(capsys, settings, scope, "dead")).out
    (run,) = await control.runs("ghost")
    assert run["status"] == "succeeded" and run["trigger_source"] == "manual"


async def _parked(capsys: pytest.CaptureFixture[str], settings: Settings, scope: str, n: int) -> bool:
    listed = await cli_here(capsys, settings, scope, "dead")
    return f"{n} parked" in listed.out


# -- pause, resume, set, backfill -------------------------------------------------------------------------------


async def test_set_changes_the_cadence_at_once_pause_stops_it_and_resume_restarts_it(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="beat", interval_seconds=3600)
    async with running_worker(fast_settings(settings, scope), {"beat": (probe, ProbeParams)}):
        changed = await cli(settings, scope, "set", "beat", "--interval", "1")
        assert changed.code == 0 and "every 1 s" in changed.out
        await wait_until(lambda: _ran(control, "beat", 2), 15, "runs at the new cadence")

        paused = await cli(settings, scope, "pause", "beat", "--note", "maintenance window")
        assert paused.code == 0
        paused_at = now()
        await asyncio.sleep(3)  # three intervals: a live chain would have run three times
        late = await count(control, "beat", after=paused_at + timedelta(seconds=1))
        assert late == 0  # nothing runs more than one interval after the pause
        assert (await control.job("beat"))["pause_note"] == "maintenance window"

        resumed = await cli(settings, scope, "resume", "beat")
        assert resumed.code == 0 and "next slot" in resumed.out
        resumed_at = now()
        await wait_until(lambda: _ran_after(control, "beat", resumed_at), 15, "a run after resume")
    assert slots_run_more_than_once(await control.runs("beat")) == []


async def _ran_after(control: Control, job_id: str, after: datetime) -> bool:
    return await count(control, job_id, "succeeded", after=after) >= 1


async def test_backfill_runs_each_missed_slot_once_even_when_run_twice(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="past", interval_seconds=1, align=True, enabled=False)  # no chain: every slot missed
    end = now().replace(microsecond=0) - timedelta(seconds=2)
    window = ["--from", (end - timedelta(seconds=4)).isoformat(), "--to", end.isoformat()]
    async with running_worker(fast_settings(settings, scope), {"past": (probe, ProbeParams)}):
        first = await cli(settings, scope, "backfill", "past", *window)
        assert first.code == 0, first.err
        assert "5 slots of 'past'" in first.out and "5 succeeded, 0 did not" in first.out
        again = await cli(settings, scope, "backfill", "past", *window)
        assert again.code == 0 and "0 to run" in again.out and "5 slots already have a run" in again.out

        future = await cli(settings, scope, "backfill", "past", "--from", "now-1m", "--to", "2999-01-01T00:00")
        assert future.code == 2 and "in the future" in future.error_line
    rows = await control.runs("past")
    assert [r["scheduled_for"] for r in rows] == [end - timedelta(seconds=s) for s in (4, 3, 2, 1, 0)]
    assert {(r["status"], r["trigger_source"], r["attempt"]) for r in rows} == {("succeeded", "manual", 1)}

    latest = await cli(settings, scope, "runs", "past", "--limit", "2", "--json")
    assert [run["scheduled_for"] for run in json.loads(latest.out)] == [
        rows[-1]["scheduled_for"].isoformat(),
        rows[-2]["scheduled_for"].isoformat(),
    ]
    table = (await cli(settings, scope, "runs", "past", "--limit", "3")).out.splitlines()
    assert table[0].split()[:4] == ["SLOT", "TRIGGER", "ATTEMPT", "STATUS"] and len(table) == 4
    assert all(line.split()[2:5] == ["manual", "1", "succeeded"] for line in table[1:])
