"""Private highly available servers for the HA soak: a three-node RabbitMQ cluster and a PostgreSQL primary with a
synchronous streaming standby, all on this machine, on free ports, removed afterwards.

RabbitMQ: three nodes (`ha<tag>n0@localhost`, ...) with their own ports, data and log directories and one shared
Erlang cookie (each node's private HOME/.erlang.cookie), joined with stop_app / join_cluster / start_app, every
feature flag enabled (at-least-once dead-lettering of quorum queues needs them). The machine's own node
(rabbit@<host> on 5672/25672) is never touched.

PostgreSQL: a primary (initdb) and a standby made with `pg_basebackup -R` (primary_conninfo, standby.signal), the
primary holding `synchronous_standby_names = '*'` and `synchronous_commit = on`: a commit returns once the standby
has flushed it, so a promoted standby holds every committed run row. `switchover()` stops the primary, waits,
promotes the standby; `rebuild_standby()` makes the old primary a standby of the new one (same port), so the
DSN naming both hosts stays right through any number of switchovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from tests.chaos.servers import PG_USER, PrivatePostgres, PrivateRabbit, ServerError

SYNC_SETTINGS = {"synchronous_commit": "on", "fsync": "on"}  # the pair's point is what a commit means


class RabbitCluster:
    """Three (or `size`) private RabbitMQ nodes joined into one cluster."""

    def __init__(self, size: int = 3) -> None:
        tag = secrets.token_hex(3)
        cookie = secrets.token_hex(16)
        self.nodes = [PrivateRabbit(cookie=cookie, name=f"ha{tag}n{i}") for i in range(size)]
        self.frozen: set[int] = set()

    def start(self, timeout: float = 240) -> RabbitCluster:
        for node in self.nodes:  # spawned together from this (main) thread, booted in parallel
            node.spawn()
        for node in self.nodes:
            node.wait_started(timeout)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app", timeout=120)
            node.ctl("join_cluster", first.node, timeout=120)
            node.ctl("start_app", timeout=180)
        first.ctl("enable_feature_flag", "all", timeout=120)
        running = self.running_nodes(first)
        if sorted(running) != sorted(n.node for n in self.nodes):
            raise ServerError(f"the cluster did not form: running nodes {running}")
        return self

    def running_nodes(self, via: PrivateRabbit) -> list[str]:
        result = via.ctl("cluster_status", "--formatter", "json", timeout=60)
        return list(json.loads(result.stdout).get("running_nodes", []))

    def urls(self, user: str, password: str) -> str:
        """AMQP_URL naming every node (a comma list of full URLs)."""
        return ",".join(node.url(user, password) for node in self.nodes)

    def short_url(self, user: str, password: str) -> str:
        """The same as one URL with several hosts."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}/"

    def up(self) -> list[PrivateRabbit]:
        """Nodes whose VM runs and is not frozen."""
        return [n for i, n in enumerate(self.nodes) if n.proc and n.proc.poll() is None and i not in self.frozen]

    async def actl_any(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`rabbitmqctl` on the first node that answers (the cluster-wide commands)."""
        last: subprocess.CompletedProcess[str] | None = None
        for node in self.up():
            last = await node.actl(*args, check=False, timeout=timeout)
            if last.returncode == 0:
                return last
        if last is None:
            raise ServerError(f"no RabbitMQ node of the cluster is up for rabbitmqctl {args[0]}")
        raise ServerError(f"rabbitmqctl {args[0]} failed on every node: {last.stderr.strip()[:300]}")

    async def leaders(self) -> dict[str, str]:
        """Queue name -> node leading it (quorum queues), from `rabbitmqctl list_queues name leader`."""
        result = await self.actl_any("list_queues", "name", "leader", "--formatter", "json")
        return {q["name"]: q.get("leader", "") for q in json.loads(result.stdout or "[]")}

    def index_of(self, node_name: str) -> int | None:
        return next((i for i, n in enumerate(self.nodes) if n.node == node_name), None)

    def kill(self, index: int) -> int | None:
        """SIGKILL the node's VM (no goodbye to the cluster or the clients)."""
        node = self.nodes[index]
        if node.proc is None or node.proc.poll() is not None:
            return None
        self.thaw(index)
        node.proc.kill()
        node.proc.wait()
        return node.proc.pid

    def freeze(self, index: int) -> None:
        proc = self.nodes[index].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            self.frozen.add(index)

    def thaw(self, index: int) -> None:
        proc = self.nodes[index].proc
        if index in self.frozen and proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self.frozen.discard(index)

    async def restart(self, index: int, timeout: float = 240) -> None:
        """Start a killed node again (spawned on the event loop's main thread; booting awaited off it)."""
        node = self.nodes[index]
        node.spawn()
        await asyncio.to_thread(node.wait_started, timeout)

    async def heal(self) -> None:
        """Every node running and its app started: thaw the frozen, restart the dead, start_app everywhere."""
        for index in list(self.frozen):
            self.thaw(index)
        for index, node in enumerate(self.nodes):
            if node.proc is None or node.proc.poll() is not None:
                await self.restart(index)

        async def started(node: PrivateRabbit) -> None:
            await node.actl("start_app", check=False, timeout=180)
            await node.actl("await_startup", check=False, timeout=180)

        await asyncio.gather(*(started(node) for node in self.nodes))  # each rabbitmqctl boots a VM: together

    def keep_logs(self, dest: Path) -> None:
        """Copy each node's log files to `dest` (the node directories go with `stop`)."""
        dest.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            for log in (node.base / "log").glob("*.log"):
                with contextlib.suppress(OSError):
                    shutil.copy2(log, dest / log.name)

    def stop(self) -> None:
        for index in range(len(self.nodes)):
            self.thaw(index)
        for node in self.nodes:
            node.stop()


class PgPair:
    """A PostgreSQL primary and a synchronous streaming standby. `primary` / `standby` swap on switchover."""

    def __init__(self, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        self.primary = PrivatePostgres(extra=SYNC_SETTINGS)
        self.standby: PrivatePostgres | None = None

    def start(self) -> PgPair:
        self.primary.start()
        if self.synchronous:
            self._sql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
            self._sql(self.primary, "SELECT pg_reload_conf()")
        standby = PrivatePostgres(extra=SYNC_SETTINGS, init=False)
        self._basebackup(standby, self.primary)
        standby.start()
        self.standby = standby
        self.wait_streaming()
        return self

    def dsn(self, password: str | None = None, **query: str) -> str:
        """Both hosts, read-write session wanted: a client lands on whichever is primary."""
        assert self.standby is not None
        auth = PG_USER + ("" if password is None else ":" + quote(password, safe=""))
        hosts = ",".join(f"127.0.0.1:{pg.port}" for pg in (self.primary, self.standby))
        tail = "&".join(f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **query}.items())
        return f"postgresql://{auth}@{hosts}/postgres?{tail}"

    def _sql(self, pg: PrivatePostgres, sql: str) -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(pg.port), "-U", PG_USER, "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerError(f"psql on port {pg.port} failed: {result.stderr.strip()[:300]}")
        return result.stdout.strip()

    async def asql(self, pg: PrivatePostgres, sql: str) -> str:
        return await asyncio.to_thread(self._sql, pg, sql)

    def _basebackup(self, standby: PrivatePostgres, source: PrivatePostgres) -> None:
        shutil.rmtree(standby.data, ignore_errors=True)
        result = subprocess.run(
            [str(standby.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(source.port), "-U", PG_USER,
             "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            user=PG_USER, cwd=standby.base, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerError(f"pg_basebackup failed: {result.stderr.strip()[:300]}")

    def wait_streaming(self, timeout: float = 60) -> None:
        """Until the primary sees its standby streaming (and, synchronous, as the sync one)."""
        want = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self._sql(self.primary, "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'")
            if want in states.split():
                return
            time.sleep(0.3)
        raise ServerError(f"the standby is not streaming ({want}) within {timeout} s; see {self.primary.log_path}")

    async def switchover(self, gap_sec: float) -> dict[str, object]:
        """Stop the primary (fast shutdown: its sessions end, their advisory locks with them), leave `gap_sec`
        with no primary at all, promote the standby. The pair is then a primary without a standby until
        `rebuild_standby()`; its sync requirement is lifted until then (else every commit would wait)."""
        assert self.standby is not None
        old, new = self.primary, self.standby
        await old.astop()
        stopped = time.monotonic()
        await asyncio.sleep(gap_sec)
        await asyncio.to_thread(self._promote, new)
        promoted = time.monotonic()
        if self.synchronous:
            await self.asql(new, "ALTER SYSTEM SET synchronous_standby_names = ''")
            await self.asql(new, "SELECT pg_reload_conf()")
        self.primary, self.standby = new, old
        return {"old_port": old.port, "new_port": new.port, "no_primary_sec": round(promoted - stopped, 2)}

    def _promote(self, pg: PrivatePostgres) -> None:
        result = subprocess.run(
            [str(pg.bin / "pg_ctl"), "promote", "-w", "-t", "60", "-D", str(pg.data)],
            user=PG_USER, cwd=pg.base, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerError(f"pg_ctl promote failed: {result.stderr.strip()[:300]}")
        deadline = time.monotonic() + 60
        while self._sql(pg, "SELECT pg_is_in_recovery()") != "f":
            if time.monotonic() > deadline:
                raise ServerError("the promoted standby is still in recovery after 60 s")
            time.sleep(0.2)

    async def rebuild_standby(self) -> None:
        """The old primary (stopped) becomes a standby of the new one, on its old port; sync again."""
        assert self.standby is not None
        standby = self.standby
        await standby.astop()
        await asyncio.to_thread(self._basebackup, standby, self.primary)
        standby.spawn()  # on the event loop's (main) thread: the server dies with the soak
        await standby.wait_ready()
        if self.synchronous:
            await self.asql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
            await self.asql(self.primary, "SELECT pg_reload_conf()")
        await asyncio.to_thread(self.wait_streaming)

    def remove(self) -> None:
        for pg in (self.primary, self.standby):
            if pg is not None:
                with contextlib.suppress(Exception):
                    pg.remove()
