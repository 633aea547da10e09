"""Private RabbitMQ and PostgreSQL servers: free ports, a temporary directory, removed afterwards.

The soak stops, restarts and disconnects these; the machine's shared servers (other suites use them at the same
time) are never touched. Each server process is a child that dies with the thread that started it
(PR_SET_PDEATHSIG), so a soak that is killed leaves no server running; `stop()` / `remove()` (from a finally and
from atexit) stop them properly and delete their directory. Start them from the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support.ports import free_port

ROOT_DIR = Path(tempfile.gettempdir()) / "chaos-servers"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
PG_USER = "postgres"


class ServerError(RuntimeError):
    """A private server did not start or stop; the message names its log file."""


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that spawned it ends (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def new_base(kind: str) -> Path:
    """A fresh directory named after the owner process, so `sweep_leftovers` can tell abandoned ones."""
    ROOT_DIR.mkdir(parents=True, exist_ok=True)
    ROOT_DIR.chmod(0o755)
    base = ROOT_DIR / f"{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    base.mkdir()
    base.chmod(0o755)
    return base


def sweep_leftovers() -> list[Path]:
    """Delete directories left by earlier runs whose owner process is gone (their servers died with it)."""
    removed = []
    for base in ROOT_DIR.glob("*-*-*") if ROOT_DIR.exists() else []:
        try:
            owner = int(base.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(base, ignore_errors=True)
            removed.append(base)
    return removed


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost (for the TLS pass-through tests)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        ca, ca_key = directory / "ca.pem", directory / "ca.key"
        cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
        ext = directory / "san.cnf"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=chaos-test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext],
        ]  # fmt: skip
        for args in run:
            subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
        return cls(ca, cert, key)


class PrivateRabbit:
    """A RabbitMQ node of its own: own node name, ports, cookie (HOME), data and logs under `base`."""

    def __init__(self, tls: TlsFiles | None = None, cookie: str | None = None, name: str | None = None) -> None:
        self.base = new_base("rabbit")
        self.node = f"{name or 'chaos' + secrets.token_hex(4)}@localhost"
        self.cookie = cookie or secrets.token_hex(16)  # nodes of one cluster share theirs
        self.port = free_port()
        self.dist_port = free_port()
        self.tls_port = free_port() if tls else None
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "server.out"
        self._write_files()

    def _write_files(self) -> None:
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf: its NODENAME is the shared node
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",
            "disk_free_limit.absolute = 50MB",
            "log.console = false",
        ]
        if self.tls is not None:
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca}",
                f"ssl_options.certfile = {self.tls.cert}",
                f"ssl_options.keyfile = {self.tls.key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (self.base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def env(self) -> dict[str, str]:
        """Environment for the server and for rabbitmqctl: the private cookie lives in HOME."""
        b = self.base
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(b),
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(b / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # makes the start script exec the VM instead of forking it, so the VM itself dies with its parent
            "RUNNING_UNDER_SYSTEMD": "true",
        }

    def start(self, timeout: float = 120) -> PrivateRabbit:
        self.spawn()
        return self.wait_started(timeout)

    def spawn(self) -> None:
        """Start the VM as a child (from the main thread: it dies with it)."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self.env(),
                cwd=self.base,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )

    def wait_started(self, timeout: float = 120) -> PrivateRabbit:
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"private RabbitMQ exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if self.ctl("await_startup", "--timeout", "30", check=False, timeout=60).returncode == 0:
                    return self
            except subprocess.TimeoutExpired:  # rabbitmqctl itself slow to boot on a loaded machine: ask again
                continue
            time.sleep(0.5)
        raise ServerError(f"private RabbitMQ did not start within {timeout} s; see {self.log_path}")

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`rabbitmqctl -n <this node> ...` with the private cookie."""
        result = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ServerError(f"rabbitmqctl {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    async def actl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`ctl` without blocking the event loop."""
        return await asyncio.to_thread(self.ctl, *args, check=check, timeout=timeout)

    def url(self, user: str = "guest", password: str = "guest", *, tls: bool = False) -> str:
        port = self.tls_port if tls else self.port
        scheme = "amqps" if tls else "amqp"
        return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/"

    def add_scope_user(self, user: str, password: str, scope: str) -> None:
        """A user whose configure, write and read permissions are `^<scope>\\.`, as deploy/rabbitmq gives them."""
        self.ctl("add_user", user, password)
        pattern = f"^{scope}\\."
        self.ctl("set_permissions", "-p", "/", user, pattern, pattern, pattern)

    def stop(self) -> None:
        """Stop the node (gracefully, then by signal) and delete its directory. Safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.ctl("stop", check=False, timeout=60)
            _reap(self.proc, 30)
        shutil.rmtree(self.base, ignore_errors=True)


DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""A private PostgreSQL that keeps what it acknowledged through a crash, as a production server does (the defaults
below trade that for speed; a soak that crashes the server needs these)."""


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb as the postgres user, trust auth), listening on 127.0.0.1:port."""

    def __init__(self, tls: TlsFiles | None = None, extra: dict[str, str] | None = None, init: bool = True) -> None:
        self.base = new_base("pg")
        shutil.chown(self.base, PG_USER)
        self.data = self.base / "data"
        self.port = free_port()
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "server.log"
        self.bin = _pg_bin()
        self.extra = dict(extra or {})  # settings over the defaults below (a replicated pair wants durable commits)
        if init:  # else the data directory comes from elsewhere (pg_basebackup of a standby)
            self._initdb()

    def _initdb(self) -> None:
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER, "--no-sync", "-E", "UTF8"],
            user=PG_USER,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr.strip()}")
        if self.tls is not None:
            for name, source in (("server.crt", self.tls.cert), ("server.key", self.tls.key)):
                target = self.data / name
                shutil.copy(source, target)
                shutil.chown(target, PG_USER)
                target.chmod(0o600)

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            **self.extra,
        }
        if self.tls is not None:
            settings["ssl"] = "on"
        argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def spawn(self) -> None:
        """Start the postmaster in the foreground as a child (call from the main thread: it dies with it)."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self._argv(), user=PG_USER, cwd=self.base, stdout=out, stderr=out, preexec_fn=die_with_parent
            )

    def _ready(self) -> bool:
        probe = subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER],
            capture_output=True,
            timeout=10,
        )
        return probe.returncode == 0

    def start(self, timeout: float = 60) -> PrivatePostgres:
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._ready():
                return self
            time.sleep(0.2)
        raise ServerError(f"private PostgreSQL did not start within {timeout} s; see {self.log_path}")

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if await asyncio.to_thread(self._ready):
                return
            await asyncio.sleep(0.2)
        raise ServerError(f"private PostgreSQL did not come back within {timeout} s; see {self.log_path}")

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise ServerError(f"private PostgreSQL is not running (exit {code}); see {self.log_path}")

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT): every session is disconnected and new connections are refused."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            _reap(self.proc, timeout)

    async def astop(self, timeout: float = 30) -> None:
        await asyncio.to_thread(self.stop, timeout)

    def crash(self, timeout: float = 30) -> None:
        """Immediate shutdown (SIGQUIT): every process exits at once, nothing is checkpointed, and the next start
        recovers from the WAL on disk: commits whose WAL was not flushed yet (asynchronous ones) are gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            _reap(self.proc, timeout)

    async def acrash(self, timeout: float = 30) -> None:
        await asyncio.to_thread(self.crash, timeout)

    def dsn(self, user: str = PG_USER, password: str | None = None, database: str = "postgres", **query: str) -> str:
        auth = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}" + (f"?{tail}" if tail else "")

    def remove(self) -> None:
        """Stop (if running) and delete the cluster. Safe to call twice."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        raise ServerError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return candidates[-1].parent


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for `proc`; SIGTERM, then SIGKILL, when it does not exit in time."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue
