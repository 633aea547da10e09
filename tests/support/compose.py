"""A compose profile rehearsed without an engine: every service of the profile as a local process, the way its
container would run.

What is followed as written: the compose file's services of the profile (plus those without a profile), their
`command`/`entrypoint` (else the image's CMD), `environment` and `env_file`, bind mounts, `deploy.replicas`,
`depends_on` order and conditions, and each `healthcheck.test`, run until it passes. App services (those with a
`build`) run from the image of `deploy/Dockerfile` (tests/support/image.py: the installed wheel in a venv, a
working directory holding only what the Dockerfile copies). The only rewrites: a compose service's host name
becomes 127.0.0.1 and its ports free ones (in environment values, commands, healthchecks and the stand-ins'
config files), and a named volume's mount point becomes a folder of the rehearsal.

Infrastructure is stood in by the machine's own server binaries, on private instances (tests/chaos/servers.py),
so the profile's own scope (`mock`, `real`) and users run exactly as the compose file says without touching the
machine's shared servers or a live demo on them:
* `rabbitmq:*` -> a private RabbitMQ node started with deploy/rabbitmq/rabbitmq.conf (listener port rewritten)
  and so with deploy/rabbitmq/definitions.json: the scope users and their permissions are the deploy's.
* `postgres:*` -> a private PostgreSQL cluster where POSTGRES_USER / POSTGRES_DB are created as the image's
  entrypoint creates them (trust authentication: the password is not checked).
* `prom/prometheus`, `prom/alertmanager` -> Debian's `prometheus` / `prometheus-alertmanager` with the service's
  command and mounted config files (host names and ports rewritten), listening on a free port.
Any other image (Loki, Grafana) is not started: `Rehearsal.not_rehearsed` says so, and an app service whose
`depends_on` names one fails the rehearsal.

A variable `${NAME}` without a default that is not given, an `env_file` or a bind-mounted file that does not
exist: each raises RehearsalError naming it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.chaos.servers import PrivatePostgres, PrivateRabbit, die_with_parent
from tests.support.image import Image
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
# Images whose program Debian packages: the rehearsal runs the package's binary with the service's command.
BINARIES = {"prom/prometheus": "prometheus", "prom/alertmanager": "prometheus-alertmanager"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0"}
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class RehearsalError(AssertionError):
    """The compose file cannot be run as written (a missing file or variable, a failed service)."""


# -- reading the compose file ---------------------------------------------------------------------------------


def interpolate(value: Any, variables: dict[str, str], where: str) -> Any:
    """Compose's variable interpolation over every string of `value`. A variable without a default that is not
    set is an error here (compose would only warn and use an empty string)."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables, where) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = variables.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?") and not current:
            raise RehearsalError(f"{where}: ${{{name}}} is required: {arg}")
        if current is None:
            raise RehearsalError(f"{where}: variable {name} is not set and has no default")
        return current

    return _VARIABLE.sub(one, value)


def load(variables: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services of the compose file, anchors merged and variables interpolated."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    return {name: interpolate(svc, variables, name) for name, svc in data["services"].items()}


def in_profile(services: dict[str, dict[str, Any]], profile: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose --profile P up` starts: P's and those without a profile."""
    selected = {n: s for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}
    if not any(s.get("profiles") for s in selected.values()):
        raise RehearsalError(f"no service has profile {profile!r}")
    return selected


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Service names, each after everything it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise RehearsalError(f"depends_on cycle: {' -> '.join((*path, name))}")
        if name not in services:
            raise RehearsalError(f"{path[-1]} depends on {name}, which is not in the profile")
        for dependency in depends_on(services[name]):
            visit(dependency, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (rule or {}).get("condition", "service_started") for name, rule in raw.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on inside its container: `ports` (container side), `expose`, `*_PORT` env."""
    found = set()
    for entry in service.get("ports", []):
        text = str(entry["target"] if isinstance(entry, dict) else entry)
        found.add(int(text.rsplit(":", 1)[-1].split("/")[0]))
    found |= {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for key, value in (service.get("environment") or {}).items():
        if key.endswith("_PORT") and str(value).isdigit() and int(value):
            found.add(int(value))
    return found


def environment(service: dict[str, Any], name: str, variables: dict[str, str]) -> dict[str, str]:
    """`env_file` entries (each must exist), then `environment`, as compose merges them."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, str | dict) else files:
        path_text = entry if isinstance(entry, str) else entry["path"]
        path = DEPLOY / path_text
        if not path.exists():
            if isinstance(entry, dict) and entry.get("required") is False:
                continue
            raise RehearsalError(f"{name}: env_file {path_text} does not exist ({path})")
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                env[key.strip()] = interpolate(value.strip().strip("'\""), variables, f"{name} env_file")
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, variables.get(item, "")) for item in raw)
    env.update({k: "" if v is None else str(v) for k, v in raw.items()})
    return env


# -- rewriting host names and ports ---------------------------------------------------------------------------


@dataclass
class Addresses:
    """Where each compose service's container port is reachable in the rehearsal."""

    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def rewrite(self, text: str, own: dict[int, int] | None = None) -> str:
        """`service:port` -> `127.0.0.1:<its port>`, a bare `service` host in a URL -> 127.0.0.1; and for the
        service's own ports (`own`), `localhost:port` or the bare number -> the free port it got."""
        for (service, port), host_port in self.ports.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(service)}:{port}(?!\d)", f"127.0.0.1:{host_port}", text)
        for port, host_port in (own or {}).items():
            text = re.sub(rf"(localhost|127\.0\.0\.1|0\.0\.0\.0):{port}(?!\d)", rf"\g<1>:{host_port}", text)
            if text == str(port):
                text = str(host_port)
        return text


# -- processes ------------------------------------------------------------------------------------------------


@dataclass
class Container:
    """One running replica of a service."""

    service: str
    name: str
    proc: subprocess.Popen[bytes] | None
    cwd: Path
    env: dict[str, str]
    log_path: Path
    healthcheck: list[str] | None
    started: float = field(default_factory=time.monotonic)
    app: bool = True  # from the app image (else a stand-in's program)

    def output(self, tail: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-tail:].decode("utf-8", "replace")
        return ""


def healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    if check.get("disable") or not test:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    if kind == "NONE":
        return None
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)]
    if kind != "CMD":
        raise RehearsalError(f"healthcheck test {test!r}: not CMD, CMD-SHELL or NONE")
    return list(rest)


def seconds(value: Any, default: float) -> float:
    """A compose duration (`15s`, `1m30s`, `500ms`) in seconds."""
    if value is None:
        return default
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    if not parts:
        raise RehearsalError(f"duration {value!r} is not one compose understands")
    return sum(float(number) * units[unit] for number, unit in parts)


def unhealthy_after(service: dict[str, Any]) -> float:
    """How long the engine gives a container before it is unhealthy (compose's defaults where unset)."""
    check = service.get("healthcheck") or {}
    interval, timeout = seconds(check.get("interval"), 30), seconds(check.get("timeout"), 30)
    return seconds(check.get("start_period"), 0) + int(check.get("retries", 3)) * (interval + timeout)


def _command(value: Any) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else shlex.split(str(value))


class Rehearsal:
    """`docker compose --profile P up` as local processes; `up()` returns once every service is healthy (or,
    for a one-shot, exited 0). `down()` stops everything it started and removes the private servers."""

    def __init__(self, image: Image, profile: str, variables: dict[str, str] | None = None) -> None:
        self.image = image
        self.profile = profile
        self.variables = dict(variables or {})
        self.services = in_profile(load(self.variables), profile)
        self.order = start_order(self.services)
        self.base = Path(tempfile.mkdtemp(prefix=f"rehearsal-{profile}-"))
        self.addresses = Addresses()
        self.containers: dict[str, list[Container]] = {}
        self.not_rehearsed: list[str] = [f"image: {line}" for line in image.not_rehearsed]
        self.rabbit: PrivateRabbit | None = None
        self.postgres: PrivatePostgres | None = None
        self._healthy: set[str] = set()
        self._reserve_ports()

    # -- addresses ----------------------------------------------------------------------------------------

    def _reserve_ports(self) -> None:
        """A free port for each container port of every service other services can address by name (so a config
        file naming `scheduler-service-mock:9095` reaches it); a replicated service's replicas get theirs when
        they start, as nothing can address one replica by the service's name."""
        for name, service in self.services.items():
            if int((service.get("deploy") or {}).get("replicas", 1)) > 1:
                continue
            for port in container_ports(service):
                self.addresses.ports[(name, port)] = free_port()

    # -- infrastructure stand-ins ---------------------------------------------------------------------------

    def _stand_in(self, name: str, service: dict[str, Any]) -> None:
        image = str(service.get("image", ""))
        if image.startswith("rabbitmq:"):
            self._start_rabbit(name, service)
        elif image.startswith("postgres:"):
            self._start_postgres(name, service)
        else:
            self._start_binary(name, service, BINARIES[image.split(":")[0]])

    def _mounted(self, service: dict[str, Any], container_path: str) -> Path | None:
        for volume in service.get("volumes", []):
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
            if target == container_path and source.startswith((".", "/")):
                return (DEPLOY / source).resolve()
        return None

    def _start_rabbit(self, name: str, service: dict[str, Any]) -> None:
        port = self.addresses.ports[(name, 5672)]
        conf_source = self._mounted(service, "/etc/rabbitmq/rabbitmq.conf")
        lines = []
        for line in (conf_source.read_text() if conf_source else "").splitlines():
            key, _, value = (part.strip() for part in line.partition("="))
            if key == "load_definitions":
                mounted = self._mounted(service, value)
                if mounted is None or not mounted.exists():
                    raise RehearsalError(f"{name}: load_definitions {value} is not mounted from an existing file")
                line = f"load_definitions = {mounted}"
            elif key == "listeners.tcp.default":
                line = f"listeners.tcp.default = 127.0.0.1:{port}"
            elif key.startswith("management."):
                continue  # the management plugin is not enabled on the stand-in
            lines.append(line)
        rabbit = _DeployRabbit("\n".join(lines))
        rabbit.port = port
        rabbit._write_files()
        self.rabbit = rabbit.start()
        self.not_rehearsed.append(f"{name}: the management UI (plugin not enabled on the stand-in)")
        # the node's own CLI tools, with its cookie (HOME) and node name: what `rabbitmq-diagnostics` in the
        # container finds; Debian's /usr/sbin wrappers would switch to the machine node's home and cookie
        env = {**rabbit.env(), "PATH": f"/usr/lib/rabbitmq/bin:{rabbit.env()['PATH']}"}
        self.containers[name] = [
            Container(name, name, None, rabbit.base, env, rabbit.log_path, healthcheck_argv(service))
        ]

    def _start_postgres(self, name: str, service: dict[str, Any]) -> None:
        pg = PrivatePostgres()
        pg.port = self.addresses.ports[(name, 5432)]
        self.postgres = pg.start()
        env = environment(service, name, self.variables)
        user, database = env.get("POSTGRES_USER", "postgres"), env.get("POSTGRES_DB")
        database = database or user
        password = env.get("POSTGRES_PASSWORD", "").replace("'", "''")
        statements = [] if user == "postgres" else [f"CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{password}'"]
        if database != "postgres":
            statements.append(f'CREATE DATABASE "{database}" OWNER "{user}"')
        for sql in statements:
            subprocess.run(["psql", pg.dsn(), "-qc", sql], check=True, capture_output=True, timeout=60)
        check_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGHOST": "127.0.0.1", "PGPORT": str(pg.port)}
        self.containers[name] = [
            Container(name, name, None, pg.base, check_env, pg.log_path, healthcheck_argv(service))
        ]

    def _start_binary(self, name: str, service: dict[str, Any], binary: str) -> None:
        """A program of Debian's packaging in place of the image's: the service's command, its bind-mounted files
        (host names and ports rewritten) and named volumes under a folder of its own, listening on its free port."""
        fs = self.base / name
        own = {port: self.addresses.ports[(name, port)] for port in container_ports(service)}
        mounts: dict[str, Path] = {}
        for volume in service.get("volumes", []):
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
            inside = fs / target.lstrip("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            if source.startswith((".", "/")):
                host = (DEPLOY / source).resolve()
                if not host.exists():
                    raise RehearsalError(f"{name}: volume source {source} does not exist ({host})")
                if host.is_dir():
                    shutil.copytree(host, inside)
                else:
                    inside.write_text(self.addresses.rewrite(host.read_text(), own))
            else:
                inside.mkdir(parents=True, exist_ok=True)
            mounts[target] = inside
        # one pass over each argument: a container path that is (or is under) a mount point -> its folder
        pattern = re.compile(
            r"(?<![\w/.-])(" + "|".join(re.escape(t) for t in sorted(mounts, key=len, reverse=True)) + r")(?=/|$)"
        )
        argv = [shutil.which(binary) or binary]
        argv += [pattern.sub(lambda m: str(mounts[m.group(1)]), arg) for arg in _command(service.get("command"))]
        (port,) = own.values()  # the one port the image's program listens on: moved to its free one
        argv.append(f"--web.listen-address=127.0.0.1:{port}")
        check = healthcheck_argv(service)
        check = [self.addresses.rewrite(a, own) for a in check] if check else None
        log_path = self.base / f"{name}.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(fs)}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=fs, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        self.containers[name] = [Container(name, name, proc, fs, env, log_path, check, app=False)]

    # -- app containers ----------------------------------------------------------------------------------------

    def _app(self, name: str, service: dict[str, Any]) -> None:
        replicas = int((service.get("deploy") or {}).get("replicas", 1))
        self.containers[name] = [self._replica(name, service, index) for index in range(1, replicas + 1)]

    def _replica(
        self, name: str, service: dict[str, Any], index: int, extra_env: dict[str, str] | None = None
    ) -> Container:
        container = f"{name}-{index}" if index else f"{name}-run-{time.monotonic_ns()}"
        fs = self.base / container
        workdir = fs / self.image.workdir.lstrip("/")
        shutil.copytree(self.image.host(self.image.workdir), workdir, symlinks=True)
        volumes = self._volumes(name, service, fs)
        named = index == 1 and int((service.get("deploy") or {}).get("replicas", 1)) == 1
        own = {port: self.addresses.ports[(name, port)] if named else free_port() for port in container_ports(service)}
        env = {
            key: self._map_paths(self.addresses.rewrite(value, own), volumes)
            for key, value in environment(service, name, self.variables).items()
        }
        argv = _command(service.get("entrypoint")) or self.image.entrypoint
        argv = argv + (_command(service.get("command")) or self.image.cmd)
        argv = [self.addresses.rewrite(a, own) for a in argv]
        check = healthcheck_argv(service)
        check = [self.addresses.rewrite(a, own) for a in check] if check else None
        log_path = self.base / f"{container}.log"
        full_env = self.image.process_env({**env, **(extra_env or {})})
        # dies with the thread that started it (die_with_parent): a killed test run leaves no service behind
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        return Container(name, container, proc, workdir, full_env, log_path, check)

    def _volumes(self, name: str, service: dict[str, Any], fs: Path) -> dict[str, Path]:
        """Bind mounts inside the image's workdir become links to their source (which must exist); a named
        volume becomes a folder of the rehearsal. Returns container path -> rehearsal path for the rest."""
        elsewhere: dict[str, Path] = {}
        for volume in service.get("volumes", []):
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
            if source.startswith((".", "/")):
                host = (DEPLOY / source).resolve()
                if not host.exists():
                    raise RehearsalError(f"{name}: volume source {source} does not exist ({host})")
            else:
                host = self.base / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            inside = fs / target.lstrip("/")
            if target.startswith(self.image.workdir.rstrip("/") + "/"):
                if inside.is_dir() and not inside.is_symlink():
                    shutil.rmtree(inside)
                inside.parent.mkdir(parents=True, exist_ok=True)
                inside.symlink_to(host)
            else:
                elsewhere[target] = host
        return elsewhere

    @staticmethod
    def _map_paths(value: str, volumes: dict[str, Path]) -> str:
        for target, host in volumes.items():
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(host) + value[len(target.rstrip("/")) :]
        return value

    # -- up and down ------------------------------------------------------------------------------------------

    def up(self, timeout: float = 240) -> None:
        """Start every service in depends_on order, each once its dependencies meet their condition; return once
        every service is healthy or, for a one-shot, exited 0."""
        deadline = time.monotonic() + timeout
        for name in self.order:
            service = self.services[name]
            if "build" not in service and not _stood_in(service):
                self.not_rehearsed.append(f"{name} ({service.get('image')}): not started; only a Docker engine runs it")
                continue
            for dependency, condition in depends_on(service).items():
                self._wait_condition(dependency, condition, deadline, needed_by=name)
            if "build" in service:
                self._app(name, service)
            else:
                self._stand_in(name, service)
        for name in self.order:
            if name in self.containers:
                condition = "service_healthy" if self._has_check(name) else "service_started"
                if self.services[name].get("restart") == "no":
                    condition = "service_completed_successfully"
                self._wait_condition(name, condition, deadline, needed_by="the rehearsal")

    def _has_check(self, name: str) -> bool:
        return any(c.healthcheck for c in self.containers.get(name, []))

    def _wait_condition(self, name: str, condition: str, deadline: float, needed_by: str) -> None:
        if name not in self.containers:
            raise RehearsalError(f"{needed_by} depends on {name}, which the rehearsal does not start")
        for container in self.containers[name]:
            if condition == "service_completed_successfully":
                self._wait_exit(container, deadline)
            elif condition == "service_healthy":
                self._wait_healthy(container, deadline)
            elif container.proc is not None and container.proc.poll() is not None:
                raise RehearsalError(f"{container.name} exited with {container.proc.returncode}:\n{container.output()}")

    def _wait_exit(self, container: Container, deadline: float) -> None:
        assert container.proc is not None
        try:
            code = container.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RehearsalError(f"{container.name} did not finish in time:\n{container.output()}") from None
        if code != 0:
            raise RehearsalError(f"{container.name} exited with {code}:\n{container.output()}")

    def _wait_healthy(self, container: Container, deadline: float) -> None:
        """Run the healthcheck every second until it passes. The container is unhealthy, as the engine would
        call it, once start_period plus retries x (interval + timeout) have passed without a pass."""
        if container.name in self._healthy:
            return
        if container.healthcheck is None:
            raise RehearsalError(f"{container.service} has no healthcheck to wait for")
        deadline = min(deadline, container.started + unhealthy_after(self.services[container.service]))
        last = ""
        while time.monotonic() < deadline:
            if container.proc is not None and container.proc.poll() is not None:
                raise RehearsalError(f"{container.name} exited with {container.proc.returncode}:\n{container.output()}")
            try:
                result = subprocess.run(
                    container.healthcheck, cwd=container.cwd, env=container.env, capture_output=True, text=True,
                    timeout=30,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            else:
                if result.returncode == 0:
                    self._healthy.add(container.name)
                    return
                last = (result.stderr or result.stdout).strip()
            time.sleep(1)
        raise RehearsalError(f"{container.name} not healthy in time; last check: {last}\n{container.output()}")

    def app_containers(self) -> list[Container]:
        return [c for c in self.processes() if c.app]

    def processes(self) -> list[Container]:
        """Every process the rehearsal started (app containers and stand-in programs)."""
        return [c for cs in self.containers.values() for c in cs if c.proc is not None]

    def run(self, service: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`docker compose run --rm --no-deps [-e K=V] SERVICE ARGV...`: a one-off container of `service` (its
        image, environment and mounts) running `argv` instead of its command; what `make ctl` does."""
        spec = dict(self.services[service])
        spec["command"] = argv
        spec.pop("deploy", None)
        container = self._replica(service, spec, index=0, extra_env=env)
        assert container.proc is not None
        try:
            code = container.proc.wait(120)
        except subprocess.TimeoutExpired:
            container.proc.kill()
            code = container.proc.wait(5)
        return subprocess.CompletedProcess(argv, code, container.output(100_000), "")

    def app_containers_of(self, service: str) -> list[Container]:
        return [c for c in self.containers.get(service, []) if c.proc is not None]

    def down(self) -> None:
        for container in reversed(self.processes()):
            assert container.proc is not None
            if container.proc.poll() is None:
                container.proc.terminate()
        for container in self.processes():
            assert container.proc is not None
            try:
                container.proc.wait(20)
            except subprocess.TimeoutExpired:
                container.proc.kill()
                container.proc.wait(5)
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.postgres is not None:
            self.postgres.remove()
        shutil.rmtree(self.base, ignore_errors=True)


def _stood_in(service: dict[str, Any]) -> bool:
    image = str(service.get("image", ""))
    binary = BINARIES.get(image.split(":")[0])
    return image.startswith(("rabbitmq:", "postgres:")) or (binary is not None and shutil.which(binary) is not None)


class _DeployRabbit(PrivateRabbit):
    """A private node whose rabbitmq.conf is the deploy's (listener rewritten), plus the private node's own
    settings that keep it apart from the machine's node."""

    def __init__(self, deploy_conf: str) -> None:
        self.deploy_conf = deploy_conf
        super().__init__()

    def _write_files(self) -> None:
        super()._write_files()
        if not hasattr(self, "deploy_conf"):
            return
        own = [
            line
            for line in (self.base / "rabbitmq.conf").read_text().splitlines()
            if not line.startswith(("listeners.tcp.default", "loopback_users", "log.console"))
        ]
        (self.base / "rabbitmq.conf").write_text("\n".join([*own, self.deploy_conf]) + "\n")


@contextlib.contextmanager
def rehearsed(image: Image, profile: str, variables: dict[str, str] | None = None) -> Iterator[Rehearsal]:
    """A rehearsal that is up for the block and down afterwards, whatever happens."""
    rehearsal = Rehearsal(image, profile, variables)
    try:
        rehearsal.up()
        yield rehearsal
    finally:
        rehearsal.down()
