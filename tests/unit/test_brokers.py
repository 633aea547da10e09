"""AMQP_URL naming several RabbitMQ nodes: parsing, redaction, the settings error, and the aio-pika hook the
failover connection relies on."""

from __future__ import annotations

import inspect

import aio_pika
import pytest
from pydantic import ValidationError

from shared.brokers import BrokerUrlError, node_label, parse_amqp_urls, passwords, redact_all, redact_password
from shared.failover import FailoverConnection
from shared.settings import Settings, redact_url


def test_one_url_is_one_node() -> None:
    assert parse_amqp_urls("amqp://u:p@h1:5672/v") == ["amqp://u:p@h1:5672/v"]


def test_a_comma_list_of_full_urls_keeps_each_as_written() -> None:
    text = "amqp://u:p@h1:5672/v, amqps://w:q@h2:5671/other?heartbeat=30"
    assert parse_amqp_urls(text) == ["amqp://u:p@h1:5672/v", "amqps://w:q@h2:5671/other?heartbeat=30"]


def test_the_short_form_shares_credentials_vhost_and_query() -> None:
    assert parse_amqp_urls("amqp://u:p@h1:5672,h2:5673,h3/v?heartbeat=30") == [
        "amqp://u:p@h1:5672/v?heartbeat=30",
        "amqp://u:p@h2:5673/v?heartbeat=30",
        "amqp://u:p@h3/v?heartbeat=30",
    ]


def test_a_password_holding_encoded_commas_and_at_signs_is_not_split() -> None:
    urls = parse_amqp_urls("amqp://u:a%2Cb%40c@h1:5672,[::1]:5673/")
    assert urls == ["amqp://u:a%2Cb%40c@h1:5672/", "amqp://u:a%2Cb%40c@[::1]:5673/"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("http://u:p@h1/", "amqp:// or amqps://"),
        ("amqp://u:p@h1:5672,,h2/", "a host is empty"),
        ("amqp://u:p@h1:5672,/", "a host is empty"),
        ("amqp://u:secret@h1:99999/", "not a number from 1 to 65535"),
        ("amqp://u:secret@h1:56x2/", "not a number from 1 to 65535"),
        ("amqp://u:secret@:5672/", "has no name"),
    ],
)
def test_bad_input_gets_one_line_naming_what_is_wrong_and_no_password(text: str, fragment: str) -> None:
    with pytest.raises(BrokerUrlError) as caught:
        parse_amqp_urls(text)
    assert fragment in str(caught.value)
    assert "secret" not in str(caught.value)


def test_redaction_covers_every_node_and_both_forms() -> None:
    assert redact_password("amqp://u:pw@h1:5672,h2:5673/v") == "amqp://u:***@h1:5672,h2:5673/v"
    assert redact_all("amqp://u:pw@h1/v,amqp://w:pw2@h2/v") == "amqp://u:***@h1/v,amqp://w:***@h2/v"
    assert redact_url("postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write") == (
        "postgresql://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write"
    )
    assert redact_password("amqp://h1/") == "amqp://h1/"


def test_every_password_of_a_list_is_found_for_masking() -> None:
    assert passwords("amqp://u:a%40b@h1/v,amqp://w:pw2@h2/v") == ["a%40b", "a@b", "pw2"]
    assert passwords("postgresql://u:pg@db1:5432,db2:5432/x") == ["pg"]
    assert passwords("amqp://h1/") == []


def test_node_label_names_host_and_port_only() -> None:
    assert node_label("amqp://u:pw@h1:5673/v") == "h1:5673"
    assert node_label("amqps://u:pw@h2/v") == "h2:5671"


def test_settings_refuse_a_bad_list_without_showing_the_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(amqp_url="amqp://u:hunter2@h1:5672,,h2/")  # type: ignore[arg-type]
    assert "a host is empty" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    settings = Settings(amqp_url="amqp://u:hunter2@h1:5672,h2:5673/")  # type: ignore[arg-type]
    assert settings.amqp_urls == ["amqp://u:hunter2@h1:5672/", "amqp://u:hunter2@h2:5673/"]
    assert settings.amqp_url_redacted == "amqp://u:***@h1:5672,h2:5673/"


def test_the_robust_connection_clears_its_transport_before_each_reconnection_attempt() -> None:
    """FailoverConnection picks the next node in the `transport` setter: aio-pika must keep clearing the
    transport right before it calls Connection.connect in its reconnection loop."""
    source = inspect.getsource(aio_pika.RobustConnection)
    cleared = source.index("self.transport = None")
    assert cleared < source.index("await Connection.connect(self", cleared)


def test_the_failover_connection_moves_to_the_next_node_on_each_attempt_after_the_first() -> None:
    urls = ["amqp://u:p@h1:5672/", "amqp://u:p@h2:5673/", "amqp://u:p@h3:5674/"]

    async def nodes() -> list[str]:
        connection = FailoverConnection(urls, start=1)
        seen = []
        for _ in range(4):
            connection.transport = None  # what aio-pika does before each attempt
            seen.append(connection.node)
        assert "p@" not in str(connection) and str(connection).startswith("amqp://u:******@")
        return seen

    import asyncio

    assert asyncio.run(nodes()) == ["h2:5673", "h3:5674", "h1:5672", "h2:5673"]
