"""`doctor`'s conclusions from plain facts (shared.diagnosis): each check's failing and passing case."""

from __future__ import annotations

import pytest

from shared import diagnosis
from shared.control.doctor import Management
from shared.diagnosis import Finding

EXPECTED = {"x-dead-letter-exchange": "s.jobs", "x-dead-letter-routing-key": "s.jobs.w"}


@pytest.mark.parametrize(
    ("finding", "ok", "says"),
    [
        (diagnosis.broker_version("3.9.29"), False, "needs 3.10"),
        (diagnosis.broker_version("3.10.8"), True, "RabbitMQ 3.10.8"),
        (diagnosis.broker_version(None), False, "did not say"),
        (diagnosis.feature_flags({"quorum_queue": "enabled", "stream_queue": "disabled"}, None), False,
         "enable_feature_flag stream_queue"),
        (diagnosis.feature_flags(None, "management API unreachable"), False, "not checked: management"),
        (diagnosis.feature_flags({"quorum_queue": "enabled", "stream_queue": "enabled"}, None), True, "enabled"),
        (diagnosis.queue_arguments("q", "delay queue", EXPECTED, None), False, "missing"),
        (diagnosis.queue_arguments("q", "delay queue", EXPECTED, {**EXPECTED, "x-expires": 5}), False, "x-expires"),
        (diagnosis.queue_arguments("q", "delay queue", EXPECTED, {**EXPECTED, "x-dead-letter-routing-key": "o"}),
         False, "x-dead-letter-routing-key: expected 's.jobs.w', found 'o'"),
        (diagnosis.queue_arguments("q", "delay queue", EXPECTED, dict(EXPECTED)), True, "as declared"),
        (diagnosis.delivery_limit("w", {}, {"delivery-limit": 20}), False, "20: a chain message requeued"),
        (diagnosis.delivery_limit("w", {}, None), True, "none"),
        (diagnosis.queue_count(10, 5_000, 3), False, "quorum queues per node"),
        (diagnosis.queue_count(10, 5, 3), True, "10 on the broker (5 quorum), 3 in this scope"),
        (diagnosis.ttl_canary("quorum", None, 10, 300), False, "never fire"),
        (diagnosis.ttl_canary("quorum", 0.4, 10, 300), True, "after 0.40 s"),
        (diagnosis.clock_skew("postgresql", 1.5), False, "chrony"),
        (diagnosis.clock_skew("broker", 1.5, resolution_sec=1.0), True, "+1.500 s"),
        (diagnosis.migrations(None, [1, 2]), False, "schema not created"),
        (diagnosis.migrations({1}, [1, 2]), False, "0002 not applied"),
        (diagnosis.migrations({1, 2, 3}, [1, 2]), True, "newer ones (to 0003)"),
    ],
)  # fmt: skip
def test_finding(finding: Finding, ok: bool, says: str) -> None:
    assert finding.ok is ok and says in finding.text, finding.line
    assert finding.line.startswith("ok   " if ok else "FAIL ")


def test_policy_expiry_only_when_a_policy_sets_expires() -> None:
    assert diagnosis.policy_expiry("q", "work queue", {"max-length": 5}) is None
    found = diagnosis.policy_expiry("q", "work queue", {"expires": 1000})
    assert found is not None and not found.ok and "expires = 1000" in found.text


def test_management_api_address_follows_the_amqp_url_unless_given() -> None:
    derived = Management.for_amqp_url("amqp://u:p%40ss@rabbit:5672/prod,amqp://u:p@other:5672/prod")
    assert (derived.base_url, derived.user, derived.password, derived.vhost) == (
        "http://rabbit:15672",
        "u",
        "p@ss",
        "prod",
    )
    assert Management.for_amqp_url("amqp://guest:guest@127.0.0.1:5672/").vhost == "/"
    given = Management.for_amqp_url("amqp://u:p@rabbit/", "https://admin:secret@mgmt:443")
    assert (given.base_url, given.user, given.password) == ("https://mgmt:443", "admin", "secret")
    assert given.queue_path("s.jobs.w") == "/api/queues/%2F/s.jobs.w"
