"""The soak: private servers, a scope of jobs, three workers, faults at random times, then the checker.

1. start a private RabbitMQ node and a private PostgreSQL cluster; create the scope's own RabbitMQ user
   (permissions `^<scope>\\.` only) and run everything (workers and CLI) as that user;
2. start the workers, seed the jobs file through the CLI;
3. for `duration` seconds, two loops at random times: faults (a worker killed, connections closed, the broker
   restarted, database sessions terminated, the database down for 10-30 s), and control actions (a second
   `seed`, storms of pause / resume / set); each is written to the fault log with its start and end;
4. quiet for `settle` seconds (longer than the grace), so every chain must be back by the end;
5. check the delay queues (one message at most per job: one chain), stop the workers, check that no log line
   holds a password, and run the checker on the history. Its exit code is the soak's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from tests.chaos import delay_peek, faults, ha_faults, queue_watch
from tests.chaos.faultlog import Event, FaultLog, utcnow
from tests.chaos.fleet import ROOT, WORKER_ENV, Fleet
from tests.chaos.ha_servers import PgPair, RabbitCluster
from tests.chaos.jobset import make_jobs, write_jobs_file
from tests.chaos.servers import DURABLE_SETTINGS, PrivatePostgres, PrivateRabbit, sweep_leftovers

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


@dataclass(frozen=True)
class SoakConfig:
    out_dir: Path
    duration_sec: float = 300.0
    jobs: int = 30
    workers: int = 3
    seed: int = field(default_factory=lambda: random.randrange(1_000_000))
    grace_sec: float = 20.0
    settle_sec: float = 30.0
    warmup_sec: float = 10.0
    quiet_sec: tuple[float, float] = (8.0, 20.0)  # between two faults
    control_gap_sec: tuple[float, float] = (8.0, 20.0)  # between two control actions
    pg_outage_sec: tuple[float, float] = (10.0, 30.0)
    kinds: tuple[str, ...] = faults.DEFAULT_KINDS
    controls: bool = True
    # the HA soak: a three-node RabbitMQ cluster with quorum queues, a PostgreSQL primary and synchronous standby
    ha: bool = False
    freeze_sec: float = 20.0
    clock_skews_sec: tuple[float, ...] = ()  # one worker per entry runs with its clock this far off (libfaketime)
    once: bool = False  # every fault kind once, back to back, then the faults are over (the duration is a limit)
    down_scale: float = 1.0  # the times servers and workers are kept down, scaled
    watch_queues: bool = False  # sample the work queues every 3 s (queues.jsonl): a rabbitmqctl VM each time

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def run(config: SoakConfig) -> int:
    """Start the private servers, run the soak, always stop and remove the servers. Returns the exit code."""
    sweep_leftovers()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    if config.ha:
        return _run_ha(config)
    rabbit = PrivateRabbit()
    pg = PrivatePostgres(extra=DURABLE_SETTINGS if "pg_crash" in config.kinds else None)
    cleanup = _Cleanup(rabbit.stop, pg.remove)
    atexit.register(cleanup)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        say(f"starting a private RabbitMQ node {rabbit.node} on port {rabbit.port}")
        rabbit.start()
        say(f"starting a private PostgreSQL on port {pg.port} ({pg.base})")
        pg.start()
        return asyncio.run(soak(config, rabbit, pg))
    finally:
        cleanup()
        signal.signal(signal.SIGTERM, previous)


def _run_ha(config: SoakConfig) -> int:
    if config.clock_skews_sec and not FAKETIME_LIB.exists():
        raise SystemExit(f"{FAKETIME_LIB} is missing: install Debian's faketime package (apt-get install faketime)")
    cluster, pair = RabbitCluster(), PgPair()
    cleanup = _Cleanup(lambda: cluster.keep_logs(config.out_dir / "nodes"), cluster.stop, pair.remove)
    atexit.register(cleanup)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        say("starting a three-node RabbitMQ cluster: " + ", ".join(f"{n.node} :{n.port}" for n in cluster.nodes))
        cluster.start()
        say(f"starting a PostgreSQL primary (:{pair.primary.port}) and a synchronous standby")
        pair.start()
        return asyncio.run(soak(config, cluster.nodes[0], pair.primary, cluster, pair))
    finally:
        cleanup()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


class _Cleanup:
    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps, self.done = steps, False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        for step in self.steps:
            step()


def say(line: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {line}", flush=True)


async def soak(
    config: SoakConfig,
    rabbit: PrivateRabbit,
    pg: PrivatePostgres,
    cluster: RabbitCluster | None = None,
    pair: PgPair | None = None,
) -> int:
    out = config.out_dir
    rng = random.Random(config.seed)
    scope = f"chaos{secrets.token_hex(4)}"
    user, amqp_password, pg_password = f"{scope}-user", f"pw!{secrets.token_hex(8)}#$", f"pg@{secrets.token_hex(8)}"
    await asyncio.to_thread(rabbit.add_scope_user, user, amqp_password, scope)
    jobs = make_jobs(config.jobs, config.seed)
    jobs_file = write_jobs_file(out / "jobs.toml", jobs)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "DATABASE_URL", "SCHEDULER_SCOPE")},
        "AMQP_URL": rabbit.url(user, amqp_password),
        "DATABASE_URL": pg.dsn(password=pg_password),
        "SCHEDULER_SCOPE": scope,
        "LOG_LEVEL": "INFO",
    }
    cli_env = dict(env)
    if cluster is not None and pair is not None:
        # workers name every node as a list of URLs, the CLI in the short form; both name both PostgreSQL hosts
        env |= {"AMQP_URL": cluster.urls(user, amqp_password), "DATABASE_URL": pair.dsn(password=pg_password),
                "SCHEDULER_QUEUE_TYPE": "quorum"}  # fmt: skip
        cli_env = env | {"AMQP_URL": cluster.short_url(user, amqp_password)}
    log = FaultLog(out / "faults.jsonl")
    log.mark("soak_start", scope=scope, rabbit_node=rabbit.node, amqp_user=user, config=config.to_json(),
             worker_env=WORKER_ENV)  # fmt: skip
    fleet = Fleet(config.workers, jobs_file, out, env, log, skewed_slots(config))
    cli = faults.Cli(cli_env, out / "cli.log")
    rig = faults.Rig(rabbit, pg, fleet, log, cli, rng, jobs_file, {j.job_id: j for j in jobs}, scope=scope,
                     cluster=cluster, pair=pair, down_scale=config.down_scale)  # fmt: skip
    say(f"scope {scope}: {len(jobs)} jobs, {config.workers} workers as RabbitMQ user {user!r}; output in {out}")
    sampler: asyncio.Task[None] | None = None
    try:
        fleet.start_all()
        await wait_for_workers(pg.dsn(), scope, config.workers)
        if config.watch_queues:
            sampler = asyncio.create_task(queue_watch.sample(broker_ctl(rig), scope, out / "queues.jsonl"))
        await initial_seed(rig)
        await inject(config, rig)
        await settle(config, rig)
        await check_chains(rig, scope)
        drained = await check_work_queues(rig, scope)
        await check_users(rig, user)
        if config.watch_queues or not drained:
            await queue_watch.snapshot(broker_ctl(rig), scope, out / "consumers.json")
    finally:
        if sampler is not None:
            sampler.cancel()
        await fleet.stop_all()
        log.mark("soak_end")
    check_secrets(rig, [amqp_password, pg_password])
    return await run_checker(config, rig, scope)


def broker_ctl(rig: faults.Rig) -> queue_watch.Ctl:
    """`rabbitmqctl` on the broker (on the cluster: on the first node that answers)."""
    if rig.cluster is not None:
        return rig.cluster.actl_any

    async def ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return await rig.rabbit.actl(*args, check=False, timeout=timeout)

    return ctl


def skewed_slots(config: SoakConfig) -> dict[int, dict[str, str]]:
    """The last workers of the fleet, one per skew, with their clock moved by libfaketime (monotonic time kept)."""
    first = config.workers - len(config.clock_skews_sec)
    if first < 0:
        raise ValueError(f"{len(config.clock_skews_sec)} skewed clocks need at least as many workers")
    return {first + i: faketime_env(skew) for i, skew in enumerate(config.clock_skews_sec)}


def faketime_env(skew: float) -> dict[str, str]:
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": f"{skew:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
        "CHAOS_CLOCK_SKEW_SEC": str(skew),
    }


async def wait_for_workers(dsn: str, scope: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                live = await conn.fetchval(
                    "SELECT count(*) FROM scheduler.workers WHERE scope = $1"
                    " AND scheduler.advisory_lock_held(lock_key)",
                    scope,
                )
            finally:
                await conn.close()
            if live >= count:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{count} workers did not register within {timeout} s")


async def initial_seed(rig: faults.Rig) -> None:
    start = utcnow()
    ok, attempts, error = await rig.cli.until_ok("seed", "--file", str(rig.jobs_file), attempts=5)
    rig.log.write(Event("seed", start, utcnow(), ok=ok, detail={"file": str(rig.jobs_file), "attempts": attempts}))
    if not ok:
        raise RuntimeError(f"the initial seed failed: {error}")


async def inject(config: SoakConfig, rig: faults.Rig) -> None:
    """Faults and control actions at random times until the duration is over (each action runs to its end)."""
    deadline = time.monotonic() + config.duration_sec
    injectors = {**faults.FAULTS, "pg_outage": faults.pg_outage(*config.pg_outage_sec)}
    if config.ha:
        injectors = {**ha_faults.HA_FAULTS, "node_freeze": ha_faults.node_freeze(config.freeze_sec),
                     "pg_outage": faults.pg_outage(*config.pg_outage_sec)}  # fmt: skip
    kinds = [k for k in config.kinds if k in injectors]
    faults_over = asyncio.Event()

    async def fault_loop() -> None:
        await asyncio.sleep(min(config.warmup_sec, config.duration_sec))
        order = rig.rng.sample(kinds, len(kinds))  # every kind once first, then at random
        while time.monotonic() < deadline and kinds and (order or not config.once):
            kind = order.pop(0) if order else rig.rng.choice(kinds)
            event = await injectors[kind](rig)
            say(f"fault {event.kind} {event.detail} ({(event.end - event.start).total_seconds():.1f} s)")
            if order or not config.once:
                await _sleep_until(deadline, rig.rng.uniform(*config.quiet_sec))
        faults_over.set()

    async def control_loop() -> None:
        reseeded = False
        while True:
            with contextlib.suppress(TimeoutError):  # the faults ending (--once) ends the wait too
                gap = min(rig.rng.uniform(*config.control_gap_sec), max(0.0, deadline - time.monotonic()))
                await asyncio.wait_for(faults_over.wait(), gap)
            if time.monotonic() >= deadline or faults_over.is_set():
                return
            half_way = time.monotonic() > deadline - config.duration_sec / 2
            if (half_way and not reseeded) or rig.rng.random() < 0.15:
                event = await faults.reseed(rig)
                reseeded = True
                say(f"control reseed ok={event.ok}")
            else:
                events = await faults.control_storm(rig)
                say("control storm " + ", ".join(f"{e.kind} {e.jobs[0] if e.jobs else ''}" for e in events))

    loops = [fault_loop()] + ([control_loop()] if config.controls else [])
    await asyncio.gather(*loops)


async def _sleep_until(deadline: float, seconds: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - time.monotonic())))


async def settle(config: SoakConfig, rig: faults.Rig) -> None:
    """Every server up, every worker alive (one that died on its own is a finding), then a quiet period."""
    if rig.cluster is not None:
        await rig.cluster.heal()
    else:
        await rig.rabbit.actl("start_app", check=False, timeout=120)
    if rig.pg.proc is None or rig.pg.proc.poll() is not None:
        rig.pg.spawn()
        await rig.pg.wait_ready()
    dead = rig.fleet.dead()
    check(rig, "workers_never_die", not dead, died=[(s.index, s.proc.returncode if s.proc else None) for s in dead])
    for slot in dead:
        rig.fleet.start(slot)
    rig.log.mark("faults_end")
    say(f"faults over; quiet for {config.settle_sec:g} s")
    await asyncio.sleep(config.settle_sec)


async def check_chains(rig: faults.Rig, scope: str, samples: int = 4, gap_sec: float = 3.0) -> None:
    """One chain per job: no delay queue holds two different future slots of the job's current epoch. A queue
    holding more than one message in every sample (a few seconds apart: a copy in flight moves on) is looked into
    (tests.chaos.delay_peek): second copies of one slot, stale epochs and overdue messages are reported, not
    counted as a second chain."""
    args = ("list_queues", "name", "messages", "--formatter", "json")
    seen: list[dict[str, int]] = []
    for sample in range(samples):
        result = await (rig.cluster.actl_any(*args) if rig.cluster else rig.rabbit.actl(*args))
        queues = {q["name"]: q["messages"] for q in json.loads(result.stdout or "[]")}
        if sample == 0:
            (rig.fleet.out_dir / "queues.json").write_text(json.dumps(queues, indent=2, sort_keys=True))
        seen.append({
            name: n for name, n in queues.items() if name.startswith(f"{scope}.") and name.endswith(".delay") and n > 1
        })  # fmt: skip
        if not seen[-1]:
            break
        await asyncio.sleep(gap_sec)
    crowded = {name: n for name, n in seen[-1].items() if all(name in s for s in seen)}
    inside = {name: await _look_inside(rig, scope, name) for name in crowded}
    chains = {name: kinds for name, kinds in inside.items() if len(kinds["live"]) > 1}
    check(rig, "one_chain_per_job", not chains, second_chains=chains, crowded_delay_queues=inside, samples=seen)


async def check_work_queues(rig: faults.Rig, scope: str, samples: int = 4, gap_sec: float = 3.0) -> bool:
    """After the quiet period every work queue is drained in a moment: a queue holding messages in every sample
    (quorum queue counters are refreshed every few seconds, so several seconds apart) has messages nobody
    takes, such as those the broker gives a consumer the client forgot (see shared.worker.forget_consumer)."""
    seen: list[dict[str, int]] = []
    for sample in range(samples):
        rows = await queue_watch.work_queues(broker_ctl(rig), scope)
        seen.append({
            str(r["name"]): int(r.get("messages_ready") or 0) + int(r.get("messages_unacknowledged") or 0)
            for r in rows if r.get("messages_ready") or r.get("messages_unacknowledged")
        })  # fmt: skip
        if not seen[-1]:
            break
        if sample < samples - 1:
            await asyncio.sleep(gap_sec)
    stuck = {name: n for name, n in seen[-1].items() if all(name in s for s in seen)} if len(seen) == samples else {}
    check(rig, "work_queues_drained", not stuck, held=stuck, samples=seen)
    return not stuck


async def _look_inside(rig: faults.Rig, scope: str, queue: str) -> dict[str, list[str]]:
    job_id = queue.removeprefix(f"{scope}.jobs.").removesuffix(".delay")
    node = rig.cluster.up()[0] if rig.cluster else rig.rabbit
    messages = await delay_peek.peek(node.url(), queue)
    conn = await asyncpg.connect(rig.pg.dsn(), timeout=10)
    try:
        epoch = await conn.fetchval("SELECT epoch FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", scope, job_id)
    finally:
        await conn.close()
    return delay_peek.classify(messages, epoch, utcnow())


async def check_users(rig: faults.Rig, user: str) -> None:
    """Every connection to the broker is the scope's own user, whose permissions end at `^<scope>\\.`."""
    nodes = rig.cluster.nodes if rig.cluster else [rig.rabbit]
    found: set[str] = set()
    for node in nodes:  # list_connections shows the clients of every node; asked of each, any one may be down
        result = await node.actl("list_connections", "user", "--formatter", "json", check=False)
        if result.returncode == 0:
            found |= {c["user"] for c in json.loads(result.stdout or "[]")}
    users = sorted(found)
    check(rig, "workers_use_the_scope_user", users == [user], users=users, expected=user)


def check_secrets(rig: faults.Rig, secrets_: list[str]) -> None:
    """No password (as written, or URL-encoded) in any worker log or CLI output."""
    forms = {s for secret in secrets_ for s in (secret, quote(secret, safe=""), quote(secret))}
    leaks = []
    for path in [*rig.fleet.log_files(), rig.cli.log_path]:
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            leaks += [path.name for form in forms if form in text]
    check(rig, "no_password_in_logs", not leaks, files=sorted(set(leaks)))


def check(rig: faults.Rig, name: str, ok: bool, **detail: Any) -> None:
    now = utcnow()
    rig.log.write(Event("soak_check", now, now, ok=ok, detail={"name": name, **detail}))
    if not ok:
        say(f"check {name} FAILED: {detail}")


async def run_checker(config: SoakConfig, rig: faults.Rig, scope: str) -> int:
    out = config.out_dir
    argv = [
        sys.executable, "-m", "tests.chaos.checker", "--scope", scope, "--faults", str(rig.log.path),
        "--jobs-file", str(rig.jobs_file), "--database-url", rig.pg.dsn(), "--executions", str(out / "exec"),
        "--logs", str(out / "logs"), "--dump-runs", str(out / "runs.jsonl"), "--out", str(out / "report.json"),
        "--grace", str(config.grace_sec),
    ]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out / "report.txt").write_text(result.stdout + result.stderr)
    print(result.stdout + result.stderr, flush=True)
    return result.returncode
