"""The HA compose variant (deploy/docker-compose.ha.yml), read as data with the base file it goes on top of: three
RabbitMQ nodes in one cluster sharing a cookie, a synchronous PostgreSQL standby, and every app service of the base
file naming all of them (addresses the code's own parsers accept)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.brokers import node_label, parse_amqp_urls
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODES = ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return _load("docker-compose.yml")


@pytest.fixture(scope="module")
def ha() -> dict[str, Any]:
    return _load("docker-compose.ha.yml")


def _defaults(text: str) -> str:
    """`${VAR:-default}` -> default (what compose substitutes when the variable is unset)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_three_rabbitmq_nodes_share_one_cookie_and_the_cluster_config(ha: dict[str, Any]) -> None:
    services = ha["services"]
    for name in NODES:
        node = services[name]
        assert node["hostname"] == name
        assert node["environment"]["RABBITMQ_ERLANG_COOKIE"].startswith("${RABBITMQ_ERLANG_COOKIE:?")
        assert "./rabbitmq/rabbitmq.ha.conf:/etc/rabbitmq/rabbitmq.conf:ro" in node["volumes"]
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.ha.conf").read_text()
    listed = re.findall(r"cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)", conf)
    assert listed == NODES
    assert len({tuple(sorted(v for v in services[n]["volumes"] if "data" in v)) for n in NODES}) == 3


def test_the_primary_is_synchronous_and_the_standby_copies_it(ha: dict[str, Any]) -> None:
    services = ha["services"]
    command = " ".join(services["postgres"]["command"])
    assert "synchronous_standby_names=*" in command and "synchronous_commit=on" in command
    standby = services["postgres-standby"]
    assert standby["depends_on"]["postgres"]["condition"] == "service_healthy"
    script = (DEPLOY / "postgres" / "standby.sh").read_text()
    assert "pg_basebackup" in script and " -R " in script
    assert {"rabbitmq-2-data", "rabbitmq-3-data", "postgres-standby-data"} <= set(ha["volumes"])


def test_every_app_service_names_every_node_both_databases_and_quorum_queues(
    base: dict[str, Any], ha: dict[str, Any]
) -> None:
    apps = {name for name, s in base["services"].items() if "AMQP_URL" in (s.get("environment") or {})}
    assert apps, "the base file has app services"
    for name in sorted(apps):
        env = ha["services"][name]["environment"]
        amqp, database = _defaults(env["AMQP_URL"]), _defaults(env["DATABASE_URL"])
        assert [node_label(u) for u in parse_amqp_urls(amqp)] == [f"{n}:5672" for n in NODES], name
        assert "@postgres:5432,postgres-standby:5432/" in database and "target_session_attrs=read-write" in database
        assert env["SCHEDULER_QUEUE_TYPE"] == "quorum"
        base_env = base["services"][name]["environment"]
        assert _defaults(base_env["AMQP_URL"]).split("@")[0] == amqp.split("@")[0], f"{name}: same user, password"
        settings = Settings(amqp_url=amqp, database_url=database)  # type: ignore[arg-type]
        assert len(settings.amqp_urls) == 3
