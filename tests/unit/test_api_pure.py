"""The control plane's pure parts: alert lines, tokens and bind rules, the seed's job bodies, links."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest

from scheduler_seed.server.access import cross_site
from scheduler_seed.server.alerts import Alert, AlertmanagerPayload, alert_line, alert_lines, example_payload
from scheduler_seed.server.auth import Role, bearer, check_bind, is_loopback, parse_tokens
from scheduler_seed.server.config import default_port
from scheduler_seed.server.jobs_input import short_queue, translate
from scheduler_seed.server.links import grafana_panel, loki_logs
from shared.control import InvalidDefinition
from shared.errors import ConfigError

# -- alert lines ----------------------------------------------------------------------------------------------


def test_one_line_per_alert_firing_and_resolved_with_name_job_and_summary() -> None:
    payload = AlertmanagerPayload.model_validate(
        {
            "version": "4",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "SchedulerJobFailingRepeatedly", "job_id": "buy-scanner", "scope": "mock"},
                    "annotations": {"summary": "mock/buy-scanner failed 3 times in a row"},
                },
                {
                    "status": "resolved",
                    "labels": {"alertname": "SchedulerJobNoRecentSuccess", "job_id": "news", "scope": "real"},
                    "annotations": {"summary": "real/news has not succeeded\nfor two periods"},
                },
            ],
        }
    )
    assert alert_lines(payload) == [
        "FIRING SchedulerJobFailingRepeatedly job=buy-scanner scope=mock: mock/buy-scanner failed 3 times in a row",
        "RESOLVED SchedulerJobNoRecentSuccess job=news scope=real: real/news has not succeeded for two periods",
    ]


def test_an_alert_without_job_or_summary_still_reads_as_one_line() -> None:
    assert alert_line(Alert(status="firing", labels={"alertname": "RabbitDown"})) == "FIRING RabbitDown"
    assert alert_line(Alert(status="", labels={}), group_status="resolved") == "RESOLVED alert"
    long = alert_line(Alert(status="firing", labels={"alertname": "A"}, annotations={"summary": "x" * 1000}))
    assert len(long) == 400 and long.endswith("…")


def test_the_documented_example_is_a_valid_payload() -> None:
    assert alert_lines(AlertmanagerPayload.model_validate(example_payload())) == [
        "FIRING SchedulerJobFailing job=buy-scanner scope=mock: 3 runs failed in a row"
    ]


# -- tokens and binding ---------------------------------------------------------------------------------------


def test_tokens_identify_their_name_and_role_and_nothing_else() -> None:
    tokens = parse_tokens("alice:operator:aaaaaaaaaaaaaaaa1, bob:viewer:bbbbbbbbbbbbbbbb:with:colons")
    assert tokens.enabled and tokens.names == ["alice", "bob"]
    alice, bob = tokens.identify("aaaaaaaaaaaaaaaa1"), tokens.identify("bbbbbbbbbbbbbbbb:with:colons")
    assert alice is not None and (alice.name, alice.role) == ("alice", Role.OPERATOR)
    assert bob is not None and bob.role is Role.VIEWER and not bob.may(Role.OPERATOR) and bob.may(Role.VIEWER)
    for wrong in ("", None, "aaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaa1 ", "alice"):
        assert tokens.identify(wrong) is None
    assert not parse_tokens("").enabled and not parse_tokens(" , ").enabled


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice:admin:aaaaaaaaaaaaaaaa", "role 'admin' is not viewer or operator"),
        ("alice:operator", "want name:role:token"),
        ("alice:operator:short", "shorter than 16"),
        ("Alice Smith:operator:aaaaaaaaaaaaaaaa", "token name 'Alice Smith' is not valid"),
        ("a:viewer:aaaaaaaaaaaaaaaa,a:operator:bbbbbbbbbbbbbbbb", "the name is used twice"),
        ("a:viewer:aaaaaaaaaaaaaaaa,b:operator:aaaaaaaaaaaaaaaa", "the same token as another entry"),
    ],
)
def test_a_bad_token_list_is_one_line_naming_the_entry_never_the_token(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens(text)
    message = str(caught.value)
    assert message.startswith("CONTROL_API_TOKENS: ") and problem in message and "\n" not in message
    assert "aaaaaaaaaaaaaaaa" not in message and "short" not in message.split(":", 1)[1].replace("shorter", "")


def test_without_tokens_only_loopback_addresses_may_be_bound() -> None:
    open_ = parse_tokens("")
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(host, open_)
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="refusing to serve on"):
            check_bind(host, open_)
    check_bind("0.0.0.0", parse_tokens("ops:operator:aaaaaaaaaaaaaaaa"))  # with tokens: any address


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


def test_a_change_sent_from_another_sites_page_is_cross_site() -> None:
    assert cross_site("POST", "https://evil.example", "127.0.0.1:9095")
    assert not cross_site("POST", "http://127.0.0.1:9095", "127.0.0.1:9095")
    assert not cross_site("POST", None, "127.0.0.1:9095")  # curl, Alertmanager: no Origin
    assert not cross_site("GET", "https://evil.example", "127.0.0.1:9095")


def test_default_ports_are_the_seeds() -> None:
    assert default_port("mock") == 9095 and default_port("real") == 8095 and default_port("t1") == 8095


# -- the seed's job bodies ------------------------------------------------------------------------------------


def test_a_full_queue_name_is_short_in_its_own_scope_and_refused_in_another() -> None:
    assert short_queue("mock.jobs.buy-scanner", "mock") == "buy-scanner"
    assert short_queue("buy-scanner", "mock") == "buy-scanner"
    with pytest.raises(InvalidDefinition) as caught:
        short_queue("real.jobs.buy-scanner", "mock", "buy-scanner")
    assert caught.value.fields == ("queue",)
    assert "scope 'real'" in str(caught.value) and "'mock.jobs.buy-scanner'" in str(caught.value)


def test_cron_with_interval_keeps_the_interval_as_expected_period() -> None:
    body = {"job_id": "a", "cron_expr": "*/5 * * * *", "interval_seconds": 120, "queue": "mock.jobs.a"}
    assert translate(body, "mock") == {
        "job_id": "a", "cron_expr": "*/5 * * * *", "expected_period_sec": 120, "queue": "a"
    }  # fmt: skip
    assert translate({"job_id": "b", "interval_seconds": 60}, "mock") == {"job_id": "b", "interval_seconds": 60}
    same = {"job_id": "c", "cron_expr": "0 * * * *", "interval_seconds": 60, "expected_period_sec": 60}
    assert translate(same, "s")["expected_period_sec"] == 60
    with pytest.raises(InvalidDefinition) as caught:
        translate({**same, "expected_period_sec": 30}, "s")
    assert caught.value.fields == ("interval_seconds", "expected_period_sec")


def test_links_name_the_scope_and_the_job() -> None:
    panel = grafana_panel("http://grafana:3000/", "mock", "buy-scanner")
    assert panel == "http://grafana:3000/d/scheduler/scheduler?var-scope=mock&var-job=buy-scanner"
    logs = loki_logs("http://grafana:3000", "mock", "buy-scanner")
    assert logs.startswith("http://grafana:3000/explore?left=")
    state = json.loads(unquote(logs.split("left=", 1)[1]))
    assert state["queries"][0]["expr"] == '{scope="mock", job_id="buy-scanner"}' and state["datasource"] == "loki"
