"""The faults and control actions the soak injects, each recorded in the fault log with its start and end.

Faults hit the private servers and the soak's own workers only:

* `worker_kill`: `kill -9` of one worker, started again a few seconds later;
* `amqp_close`: `rabbitmqctl close_all_connections` (every client of the private node is cut);
* `amqp_restart`: `rabbitmqctl stop_app`, a few seconds down, `start_app`;
* `pg_terminate`: `pg_terminate_backend` of every client session;
* `pg_outage`: a fast shutdown of the private PostgreSQL (connections refused) for 10-30 s, then a start;
* `pg_crash` (only when asked for: `--kinds`): an immediate shutdown (a crash: no checkpoint, unflushed WAL lost),
  2-8 s down, then a start with crash recovery. The soak then runs its PostgreSQL with durable commits
  (`servers.DURABLE_SETTINGS`): what the server acknowledged synchronously survives, a run's start (committed
  asynchronously on purpose) may not.

Control actions go through the CLI as an operator would: a second `seed` of the whole jobs file while the jobs
run, and storms of `pause` / `resume` / `set` on a job or two, among them a `pause --until` a few seconds ahead that
the watchdog ends by itself (logged as a `resume` from the moment it was due until the job was seen enabled).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from shared.definitions import JobDefinition
from tests.chaos.faultlog import Event, FaultLog, iso, utcnow
from tests.chaos.fleet import ROOT, Fleet
from tests.chaos.ha_servers import PgPair, RabbitCluster
from tests.chaos.servers import PrivatePostgres, PrivateRabbit
from tests.chaos.timeline import apply_changes


@dataclass
class Cli:
    """`python -m scheduler_seed ...` with the soak's environment; every command and its output go to a file."""

    env: dict[str, str]
    log_path: Path

    async def run(self, *argv: str, timeout: float = 120) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scheduler_seed", *argv, cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        code = proc.returncode if proc.returncode is not None else -9
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ scheduler_seed {' '.join(argv)}  -> {code}\n{out.decode()}{err.decode()}\n")
        return code, out.decode(), err.decode()

    async def until_ok(self, *argv: str, attempts: int = 40, pause: float = 2.0) -> tuple[bool, int, str]:
        """Run until it exits 0 (a command issued during an outage fails with exit 1 and is tried again)."""
        last = ""
        for attempt in range(1, attempts + 1):
            code, _, err = await self.run(*argv)
            if code == 0:
                return True, attempt, ""
            last = err.strip()[-300:]
            await asyncio.sleep(pause)
        return False, attempts, last


@dataclass
class Rig:
    """Everything the injectors act on."""

    rabbit: PrivateRabbit
    pg: PrivatePostgres
    fleet: Fleet
    log: FaultLog
    cli: Cli
    rng: random.Random
    jobs_file: Path
    file_jobs: dict[str, JobDefinition]
    current: dict[str, JobDefinition] = field(default_factory=dict)  # definitions as the soak last set them
    paused: set[str] = field(default_factory=set)
    outage: asyncio.Lock = field(default_factory=asyncio.Lock)  # one fault at a time
    scope: str = ""
    cluster: RabbitCluster | None = None  # the HA soak: `rabbit` is its first node, `pg` the current primary
    pair: PgPair | None = None
    down_scale: float = 1.0  # every time a server or worker is kept down is multiplied by this

    def down(self, low: float, high: float) -> float:
        """Seconds to keep something down: uniform in [low, high], times `down_scale`."""
        return self.rng.uniform(low, high) * self.down_scale

    def __post_init__(self) -> None:
        self.current = dict(self.file_jobs)


Injector = Callable[[Rig], Awaitable[Event]]


async def worker_kill(rig: Rig) -> Event:
    alive = [s for s in rig.fleet.slots if s.proc is not None and s.proc.poll() is None]
    slot = rig.rng.choice(alive)
    start = utcnow()
    pid = rig.fleet.kill(slot)
    killed_at = utcnow()
    down = rig.down(2, 6)
    await asyncio.sleep(down)
    new_pid = rig.fleet.start(slot)
    detail = {
        "slot": slot.index,
        "pid": pid,
        "killed_at": iso(killed_at),
        "down_sec": round(down, 2),
        "new_pid": new_pid,
    }
    return rig.log.write(Event("worker_kill", start, utcnow(), detail=detail))


async def amqp_close(rig: Rig) -> Event:
    start = utcnow()
    result = await rig.rabbit.actl("close_all_connections", "fault injected by the soak", check=False)
    return rig.log.write(
        Event("amqp_close", start, utcnow(), detail={"rc": result.returncode, "out": result.stdout.strip()[:200]})
    )


async def amqp_restart(rig: Rig) -> Event:
    start = utcnow()
    await rig.rabbit.actl("stop_app", timeout=120)
    down = rig.rng.uniform(3, 10)
    await asyncio.sleep(down)
    await rig.rabbit.actl("start_app", timeout=120)
    await rig.rabbit.actl("await_startup", timeout=120)
    return rig.log.write(Event("amqp_restart", start, utcnow(), detail={"down_sec": round(down, 2)}))


async def pg_terminate(rig: Rig) -> Event:
    start = utcnow()
    conn = await asyncpg.connect(rig.pg.dsn(), timeout=10)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return rig.log.write(Event("pg_terminate", start, utcnow(), detail={"sessions": killed}))


async def _pg_back_after(rig: Rig, kind: str, start: datetime, down: float) -> Event:
    """The private PostgreSQL, stopped at `start`, stays down `down` seconds, then starts again."""
    await asyncio.sleep(down)
    rig.pg.spawn()  # on the event loop's (main) thread: the server dies with the soak, not with a pool thread
    await rig.pg.wait_ready()
    return rig.log.write(Event(kind, start, utcnow(), detail={"down_sec": round(down, 2)}))


def pg_outage(low: float = 10, high: float = 30) -> Injector:
    async def inject(rig: Rig) -> Event:
        start = utcnow()
        await rig.pg.astop()
        return await _pg_back_after(rig, "pg_outage", start, rig.rng.uniform(low, high))

    return inject


async def pg_crash(rig: Rig) -> Event:
    start = utcnow()
    await rig.pg.acrash()
    return await _pg_back_after(rig, "pg_crash", start, rig.down(2, 8))


async def reseed(rig: Rig) -> Event:
    """A second `seed --reset` of the whole file while everything runs: the file's definitions come back over the
    storm's pauses and sets (a plain `seed` would keep those), and the chains they changed restart."""
    start = utcnow()
    ok, attempts, error = await rig.cli.until_ok("seed", "--reset", "--file", str(rig.jobs_file))
    if ok:
        rig.current = dict(rig.file_jobs)
        rig.paused.clear()
    return rig.log.write(Event("reseed", start, utcnow(), ok=ok, detail=_attempts(attempts, error)))


async def control_storm(rig: Rig) -> list[Event]:
    """A burst of pause / resume / set on one or two jobs; each job ends enabled."""
    targets = rig.rng.sample(sorted(rig.current), k=rig.rng.choice([1, 1, 2]))
    events = []
    for _ in range(rig.rng.randint(3, 6)):
        job_id = rig.rng.choice(targets)
        events.append(await control(rig, job_id))
        await asyncio.sleep(rig.rng.uniform(0, 1.5))
    for job_id in targets:
        if job_id in rig.paused:
            events.append(await _act(rig, "resume", job_id, ["resume", job_id], {}))
    return events


TIMED_PAUSE_SEC = 3.0
WATCHDOG_RESUME_LIMIT_SEC = 60.0  # past this (a server down), the storm resumes the job by hand


async def control(rig: Rig, job_id: str) -> Event:
    if job_id in rig.paused:
        return await _act(rig, "resume", job_id, ["resume", job_id], {})
    draw = rig.rng.random()
    if draw < 0.1:
        return await timed_pause(rig, job_id)
    if draw < 0.35:
        return await _act(rig, "pause", job_id, ["pause", job_id, "--note", "soak storm"], {})
    argv, changes = set_change(rig.rng, rig.current[job_id])
    return await _act(rig, "set", job_id, ["set", job_id, *argv], changes)


async def timed_pause(rig: Rig, job_id: str) -> Event:
    """`pause --until` a few seconds ahead, then the watchdog's resume, written to the fault log as a `resume`
    from the moment the pause was due to end until the job was seen enabled again (its window)."""
    argv = ["pause", job_id, "--until", f"{TIMED_PAUSE_SEC:g}s", "--note", "soak timed pause"]
    paused = await _act(rig, "pause", job_id, argv, {})
    if not paused.ok:
        return paused
    resumed_at = await _enabled_again(rig, job_id, WATCHDOG_RESUME_LIMIT_SEC)
    if resumed_at is None:
        return await _act(rig, "resume", job_id, ["resume", job_id], {})
    rig.paused.discard(job_id)
    due = paused.start + timedelta(seconds=TIMED_PAUSE_SEC)
    return rig.log.write(Event("resume", due, resumed_at, jobs=(job_id,), detail={"by": "watchdog"}))


async def _enabled_again(rig: Rig, job_id: str, limit_sec: float) -> datetime | None:
    """When the job was first seen enabled again (polled), or None after `limit_sec`."""
    deadline = asyncio.get_running_loop().time() + limit_sec
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        try:
            conn = await asyncpg.connect(rig.pg.dsn(), timeout=5)
            try:
                scope = rig.cli.env["SCHEDULER_SCOPE"]
                enabled = await conn.fetchval(
                    "SELECT enabled FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", scope, job_id
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            continue  # the database is down (a fault): the watchdog cannot resume it either
        if enabled:
            return utcnow()
    return None


def set_change(rng: random.Random, job: JobDefinition) -> tuple[list[str], dict[str, Any]]:
    """One `set` an operator might make: another cadence, jitter, or params (the columns it changes)."""
    choice = rng.choice(["cadence", "cadence", "jitter", "params"])
    if choice == "cadence" and job.cron_expr is not None:
        cron = "*/2 * * * *" if job.cron_expr == "* * * * *" else "* * * * *"
        return ["--cron", cron], {"cron_expr": cron}
    if choice == "cadence":
        seconds = rng.choice([s for s in (1, 2, 3) if s != job.interval_seconds])
        return ["--interval", str(seconds)], {"interval_seconds": seconds}
    if choice == "jitter":
        jitter = 0.0 if job.jitter_sec else 0.3
        return ["--jitter", str(jitter)], {"jitter_sec": jitter}
    params = {**job.default_params, "fail_rate": 0.0 if job.default_params.get("fail_rate") else 0.2}
    return ["--params", json.dumps(params)], {"default_params": params}


async def _act(rig: Rig, kind: str, job_id: str, argv: list[str], changes: dict[str, Any]) -> Event:
    start = utcnow()
    ok, attempts, error = await rig.cli.until_ok(*argv)
    if ok and kind == "set":
        rig.current[job_id] = apply_changes(rig.current[job_id], changes)
    elif ok and kind == "pause":
        rig.paused.add(job_id)
    elif ok and kind == "resume":
        rig.paused.discard(job_id)
    event = Event(kind, start, utcnow(), ok=ok, jobs=(job_id,), changes=changes, detail=_attempts(attempts, error))
    return rig.log.write(event)


def _attempts(attempts: int, error: str) -> dict[str, Any]:
    return {"attempts": attempts, **({"error": error} if error else {})}


FAULTS: dict[str, Injector] = {
    "worker_kill": worker_kill,
    "amqp_close": amqp_close,
    "amqp_restart": amqp_restart,
    "pg_terminate": pg_terminate,
    "pg_outage": pg_outage(),
    "pg_crash": pg_crash,
}
OPT_IN = frozenset({"pg_crash"})
"""Kinds a soak injects only when `--kinds` names them (a crash needs durable commits, which slow the soak)."""
DEFAULT_KINDS = tuple(k for k in FAULTS if k not in OPT_IN)
"""The kinds a soak injects when `--kinds` is not given."""
