"""The rehearsal's reading of the compose file (tests/support/compose.py), without servers: interpolation as
compose does it, except that a variable or a file the file names and that does not exist is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.compose import (
    Addresses,
    RehearsalError,
    environment,
    in_profile,
    interpolate,
    load,
    seconds,
    start_order,
    unhealthy_after,
)


def test_interpolation_defaults_and_escapes() -> None:
    variables = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}/$$HOME", variables, "s") == "x/d//d/$HOME"


@pytest.mark.parametrize("text", ["${UNSET}", "${EMPTY:?say why}", "${UNSET?say why}"])
def test_a_variable_that_is_not_given_fails(text: str) -> None:
    with pytest.raises(RehearsalError, match=r"UNSET|EMPTY"):
        interpolate({"environment": {"A": text}}, {"EMPTY": ""}, "svc")


def test_a_missing_env_file_fails(tmp_path: Path) -> None:
    with pytest.raises(RehearsalError, match=r"env_file nowhere\.env does not exist"):
        environment({"env_file": ["nowhere.env"]}, "svc", {})
    assert environment(
        {"env_file": [{"path": "nowhere.env", "required": False}], "environment": {"A": 1}}, "s", {}
    ) == {"A": "1"}


def test_an_unknown_profile_fails() -> None:
    with pytest.raises(RehearsalError, match="no service has profile 'staging'"):
        in_profile(load({}), "staging")


def test_services_start_after_what_they_depend_on() -> None:
    services = in_profile(load({}), "mock")
    order = start_order(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert order.index(dependency) < order.index(name), (dependency, name)


def test_only_host_names_and_ports_are_rewritten() -> None:
    addresses = Addresses({("rabbitmq", 5672): 40001, ("loki", 3100): 40002})
    url = "amqp://mock:pw@rabbitmq:5672/"
    assert addresses.rewrite(url) == "amqp://mock:pw@127.0.0.1:40001/"
    assert addresses.rewrite("http://loki:3100") == "http://127.0.0.1:40002"
    assert addresses.rewrite("http://myrabbitmq:5672") == "http://myrabbitmq:5672"
    assert addresses.rewrite("9100", own={9100: 40003}) == "40003"
    assert addresses.rewrite("http://localhost:9100/readyz", own={9100: 40003}) == "http://localhost:40003/readyz"


def test_healthcheck_timings_as_the_engine_counts_them() -> None:
    assert seconds("1m30s", 0) == 90 and seconds("500ms", 0) == 0.5 and seconds(None, 7) == 7
    check = {"healthcheck": {"interval": "10s", "timeout": "5s", "retries": 3, "start_period": "20s"}}
    assert unhealthy_after(check) == 20 + 3 * 15
