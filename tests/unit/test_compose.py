"""The compose file, read as data: profiles, healthchecks, depends_on, mounts, env vars, users, replicas.

`docker compose config` validates the file against the compose spec when the command exists (the only part
skipped without it); everything else is checked here with PyYAML and the code's own settings models.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.clients.config import ClientConfig
from services.common import ServiceSpec
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
PROFILES = ("mock", "real")
INFRA = {"rabbitmq", "postgres", "prometheus", "alertmanager", "grafana", "loki"}
APP_SERVICES = {
    "seeder", "buy-scanner", "news-crawler", "price-monitor", "scout", "daily-pipeline", "trading", "maintenance",
    "scheduler-service",
}  # fmt: skip
CODE_DIRS = ("services", "shared", "scheduler_seed")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in the compose file"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if name not in INFRA}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in app_services(services).items() if not name.startswith(("seeder-", "scheduler-service-"))
    }


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    return bool(check) and not check.get("disable", False) and bool(check.get("test"))


def spec_of(worker_name: str) -> ServiceSpec:
    """The ServiceSpec of a compose worker (`buy-scanner-mock` -> services.buy_scanner.SPEC)."""
    package = worker_name.rsplit("-", 1)[0].replace("-", "_")
    spec = importlib.import_module(f"services.{package}").SPEC
    assert isinstance(spec, ServiceSpec)
    return spec


def test_infrastructure_is_always_on_and_healthchecked(services: dict[str, dict[str, Any]]) -> None:
    assert services.keys() >= INFRA, f"missing infrastructure: {sorted(INFRA - services.keys())}"
    for name in INFRA:
        assert "profiles" not in services[name], f"{name} must start in every profile"
        assert has_healthcheck(services[name]), f"{name} has no healthcheck"


def test_every_app_service_has_one_profile_matching_its_name(services: dict[str, dict[str, Any]]) -> None:
    for name, service in app_services(services).items():
        profiles = service.get("profiles")
        assert profiles in (["mock"], ["real"]), f"{name}: profiles {profiles!r}, want exactly [mock] or [real]"
        assert name.endswith(f"-{profiles[0]}"), f"{name}: the name must end with -{profiles[0]}"


def test_both_profiles_name_the_same_services_each_in_its_own_scope(services: dict[str, dict[str, Any]]) -> None:
    for profile in PROFILES:
        names = {n.removesuffix(f"-{profile}") for n, s in app_services(services).items() if s["profiles"] == [profile]}
        assert names == APP_SERVICES, f"profile {profile}: {sorted(names ^ APP_SERVICES)} differ"
        for base in APP_SERVICES:
            env = services[f"{base}-{profile}"]["environment"]
            assert env["SCHEDULER_SCOPE"] == profile
            assert env["SERVICE_MODE"] == profile
            assert urlsplit(env["AMQP_URL"]).username == profile, f"{base}-{profile} must use the {profile} user"


def test_workers_run_their_service_module_and_are_healthchecked(services: dict[str, dict[str, Any]]) -> None:
    for name, service in workers(services).items():
        module = f"services.{name.rsplit('-', 1)[0].replace('-', '_')}"
        assert service["command"] == ["python", "-m", module], f"{name}: command {service['command']!r}"
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
        assert has_healthcheck(service), f"{name} has no healthcheck"
        test = service["healthcheck"]["test"]
        assert test[-3:] == ["python", "-m", "services.healthcheck"], f"{name}: healthcheck {test!r}"
        assert service["environment"]["METRICS_PORT"] == "9100"


def test_seeders_seed_their_own_scope_from_its_jobs_file(services: dict[str, dict[str, Any]]) -> None:
    for profile in PROFILES:
        seeder = services[f"seeder-{profile}"]
        assert seeder["restart"] == "no", "a one-shot must not be restarted"
        command = seeder["command"]
        assert command[:4] == ["python", "-m", "scheduler_seed", "seed"]
        assert command[command.index("--scope") + 1] == profile
        assert command[command.index("--file") + 1] == f"deploy/jobs/{profile}.toml"
        assert "--wait-for-deps" in command


def test_each_scope_has_its_control_plane_on_the_seeds_port_with_tokens(services: dict[str, dict[str, Any]]) -> None:
    for profile, port in (("mock", 9095), ("real", 8095)):
        service = services[f"scheduler-service-{profile}"]
        command = service["command"]
        assert command[:4] == ["python", "-m", "scheduler_seed", "serve"]
        assert command[command.index("--scope") + 1] == profile and command[command.index("--port") + 1] == str(port)
        assert service["ports"] == [f"127.0.0.1:${{SCHEDULER_API_{profile.upper()}_PORT:-{port}}}:{port}"]
        assert service["environment"]["CONTROL_API_TOKENS"], "0.0.0.0 inside the network needs tokens"
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])


def test_every_depends_on_waits_for_a_healthy_or_finished_service(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with a condition"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = rule.get("condition")
            if target.startswith("seeder-"):
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
                assert services[target]["profiles"] == service["profiles"], f"{name} waits for another scope's seeder"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: condition {condition!r}"
                assert has_healthcheck(services[target]), f"{name} waits for {target}, which has no healthcheck"
    for name in app_services(services):
        assert {"rabbitmq", "postgres"} <= set(services[name].get("depends_on", {})), f"{name} must wait for both"


def test_every_mounted_file_and_directory_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                path = (DEPLOY / source).resolve()
                if not path.exists():
                    missing.append(f"{name} mounts {source} -> {path.relative_to(ROOT)} (missing)")
    assert not missing, "mounted paths missing:\n" + "\n".join(missing)


def test_at_least_one_worker_runs_two_replicas(services: dict[str, dict[str, Any]]) -> None:
    replicated = [n for n, s in workers(services).items() if s.get("deploy", {}).get("replicas", 1) >= 2]
    assert {p for n in replicated for p in services[n]["profiles"]} == set(PROFILES), replicated
    for name in replicated:
        assert "container_name" not in services[name] and "ports" not in services[name], f"{name} cannot scale"


# -- environment variables ----------------------------------------------------------------------------------


def env_reads_in_code() -> dict[str, bool]:
    """Env var names read with os.environ / os.getenv in the code, and whether each read has a default."""
    found: dict[str, bool] = {}
    for directory in CODE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                name, has_default = _env_read(node)
                if name is not None:
                    found[name] = found.get(name, True) and has_default
    return found


def _env_read(node: ast.AST) -> tuple[str | None, bool]:
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
        key = node.slice
        return (key.value, False) if isinstance(key, ast.Constant) and isinstance(key.value, str) else (None, True)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} and node.args:
        key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value, len(node.args) > 1
    return None, True


def settings_fields() -> dict[str, bool]:
    """Env var names of the pydantic settings models, and whether each has a default."""
    fields = {}
    for model in (Settings, ClientConfig):
        for name, info in model.model_fields.items():
            fields[name.upper()] = not info.is_required()
    return fields


def test_every_env_var_the_code_reads_is_set_or_has_a_default(services: dict[str, dict[str, Any]]) -> None:
    reads = {**settings_fields(), **env_reads_in_code()}
    assert {"AMQP_URL", "DATABASE_URL", "SCHEDULER_SCOPE", "SERVICE_MODE", "MARKET_API_URL"} <= reads.keys()
    problems = [
        f"{service}: {var} is read without a default and not set"
        for service, definition in app_services(services).items()
        for var, has_default in sorted(reads.items())
        if not has_default and var not in definition.get("environment", {})
    ]
    assert not problems, "\n".join(problems)


def test_real_workers_are_given_every_outside_system_they_need(services: dict[str, dict[str, Any]]) -> None:
    for name, service in workers(services).items():
        if service["profiles"] == ["real"]:
            missing = {n.upper() for n in spec_of(name).needs} - service["environment"].keys()
            assert not missing, f"{name} needs {sorted(missing)}"


def test_connections_stay_inside_the_compose_network(services: dict[str, dict[str, Any]]) -> None:
    for name, service in app_services(services).items():
        env = service["environment"]
        assert urlsplit(env["AMQP_URL"]).hostname == "rabbitmq", name
        assert urlsplit(env["DATABASE_URL"]).hostname == "postgres", name
        assert urlsplit(env["LOKI_URL"]).hostname == "loki", name


# -- RabbitMQ users and the image ---------------------------------------------------------------------------


def definitions() -> dict[str, Any]:
    return json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())


def test_rabbitmq_users_reach_only_their_own_scope() -> None:
    data = definitions()
    users = {u["name"]: u for u in data["users"]}
    assert "guest" not in users, "guest is for a local development broker only"
    assert "administrator" in users["admin"]["tags"]
    permissions = {p["user"]: p for p in data["permissions"]}
    for scope in PROFILES:
        assert users[scope]["tags"] == [], f"{scope} must not be a management user"
        for kind in ("configure", "write", "read"):
            pattern = permissions[scope][kind]
            assert pattern == f"^{scope}\\.", f"{scope} {kind} permission {pattern!r}"
            assert re.match(pattern, f"{scope}.jobs.buy-scanner")
            other = "real" if scope == "mock" else "mock"
            assert not re.match(pattern, f"{other}.jobs.buy-scanner") and not re.match(pattern, "amq.default")


def test_compose_and_env_example_passwords_match_the_definitions(compose: dict[str, Any]) -> None:
    """Out of the box (no deploy/.env) the services log in with the passwords the broker was given."""
    passwords = {u["name"]: u["password"] for u in definitions()["users"]}
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    for scope in PROFILES:
        variable = f"RABBITMQ_{scope.upper()}_PASSWORD"
        url = compose["services"][f"buy-scanner-{scope}"]["environment"]["AMQP_URL"]
        default = re.search(re.escape("${" + variable + ":-") + r"([^}]*)\}", url)
        assert default is not None, f"{scope} AMQP_URL takes no password from {variable}"
        assert default.group(1) == passwords[scope] == example[variable]


def test_app_image_is_slim_non_root_and_without_dev_dependencies(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert ["FROM", "python:3.11-slim"] in instructions
    users = [arg for ins, *rest in instructions if ins == "USER" for arg in rest]
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"
    assert "[dev]" not in dockerfile and "-e ." not in dockerfile
    for name, service in app_services(services).items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (DEPLOY / service["build"]["context"] / "pyproject.toml").exists(), f"{name}: wrong build context"


# -- observability configs agree with the compose file ------------------------------------------------------


def test_prometheus_and_grafana_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    prometheus_file = DEPLOY / "prometheus" / "prometheus.yml"
    datasources_file = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    for path in (prometheus_file, datasources_file):
        assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    prometheus = yaml.safe_load(prometheus_file.read_text())
    hosts = set()
    for job in prometheus.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            hosts |= {t.rsplit(":", 1)[0] for t in static.get("targets", [])}
        for dns in job.get("dns_sd_configs", []):
            hosts |= set(dns.get("names", []))
    assert hosts, "prometheus.yml scrapes nothing"
    assert hosts <= services.keys() | {"localhost"}, f"not compose services: {sorted(hosts - services.keys())}"
    for rule_file in prometheus.get("rule_files", []):
        assert rule_file in {"alerts.yml", "/etc/prometheus/alerts.yml"}, f"rule file {rule_file} is not mounted"
    datasources = yaml.safe_load(datasources_file.read_text())
    for source in datasources.get("datasources", []):
        host = urlsplit(source["url"]).hostname
        assert host in services, f"datasource {source.get('name')} points at {host}, not a compose service"


# -- the compose tool itself --------------------------------------------------------------------------------


def _compose_command() -> tuple[list[str], bool] | None:
    """The compose CLI and whether it predates the top-level `name` key (docker-compose 1.x, which otherwise
    validates the same file format: profiles, depends_on conditions, healthchecks)."""
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"], False
    if shutil.which("docker-compose") is not None:
        return ["docker-compose", "--project-directory", str(DEPLOY)], True
    return None


@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_config_accepts_the_file(profile: str, tmp_path: Path) -> None:
    found = _compose_command()
    if found is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is available; the checks above read the file")
    command, legacy = found
    path = COMPOSE_FILE
    if legacy:
        path = tmp_path / "docker-compose.yml"
        path.write_text(
            "".join(line for line in COMPOSE_FILE.read_text().splitlines(True) if not line.startswith("name:"))
        )
    result = subprocess.run(
        [*command, "-f", str(path), "--profile", profile, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
