"""Queue names and queue specs of a scope: pure functions, no broker."""

from __future__ import annotations

import pytest

from shared.errors import SchedulerError, TopologyMismatch
from shared.topology import (
    QueueSpec,
    dead_name,
    dead_queue_spec,
    delay_queue_name,
    delay_queue_spec,
    event_queue_spec,
    exchange_name,
    mismatch_from_reply,
    retry_queue_name,
    retry_queue_spec,
    work_queue_name,
    work_queue_spec,
)

QUORUM_EXTRA = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def test_names_follow_the_scope_layout() -> None:
    assert exchange_name("real") == "real.jobs"
    assert work_queue_name("real", "buy-scanner") == "real.jobs.buy-scanner"
    assert delay_queue_name("real", "buy-scanner") == "real.jobs.buy-scanner.delay"
    assert retry_queue_name("real", "buy-scanner") == "real.jobs.buy-scanner.retry"
    assert dead_name("real") == "real.jobs.dead"


def _all_names(scope: str) -> set[str]:
    return {exchange_name(scope), work_queue_name(scope, "a"), delay_queue_name(scope, "a"), dead_name(scope)}


def test_two_scopes_never_share_a_name() -> None:
    assert not _all_names("mock") & _all_names("real")


def test_a_job_queue_is_never_another_jobs_work_queue() -> None:
    # Work queues have three dot-separated parts, delay and retry queues four: idents have no dots.
    assert work_queue_name("s", "x").count(".") == 2
    assert delay_queue_name("s", "x").count(".") == 3
    assert retry_queue_name("s", "x").count(".") == 3


def test_work_queue_may_not_take_the_parking_name() -> None:
    with pytest.raises(ValueError, match="reserved"):
        work_queue_name("s", "dead")


def test_classic_work_queue_is_durable_without_arguments() -> None:
    assert work_queue_spec("s", "buy-scanner") == QueueSpec("s.jobs.buy-scanner", True, {})


def test_quorum_work_queue_only_sets_the_type() -> None:
    spec = work_queue_spec("s", "buy-scanner", "quorum")
    assert spec.durable
    assert dict(spec.arguments) == {"x-queue-type": "quorum"}


def test_classic_delay_queue_dead_letters_into_the_work_queue() -> None:
    spec = delay_queue_spec("s", "price-monitor-start", "price-monitor")
    assert spec.name == "s.jobs.price-monitor-start.delay"
    assert spec.durable
    assert dict(spec.arguments) == {
        "x-dead-letter-exchange": "s.jobs",
        "x-dead-letter-routing-key": "s.jobs.price-monitor",
    }


def test_quorum_delay_queue_dead_letters_at_least_once() -> None:
    spec = delay_queue_spec("s", "job", "work", "quorum")
    assert dict(spec.arguments) == {
        "x-dead-letter-exchange": "s.jobs",
        "x-dead-letter-routing-key": "s.jobs.work",
        **QUORUM_EXTRA,
    }


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_retry_queue_has_the_delay_queue_arguments(queue_type: str) -> None:
    delay = delay_queue_spec("s", "job", "work", queue_type)  # type: ignore[arg-type]
    retry = retry_queue_spec("s", "job", "work", queue_type)  # type: ignore[arg-type]
    assert retry.name == "s.jobs.job.retry"
    assert retry.durable
    assert dict(retry.arguments) == dict(delay.arguments)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_no_queue_ever_expires(queue_type: str) -> None:
    specs = [
        work_queue_spec("s", "work", queue_type),  # type: ignore[arg-type]
        delay_queue_spec("s", "job", "work", queue_type),  # type: ignore[arg-type]
        retry_queue_spec("s", "job", "work", queue_type),  # type: ignore[arg-type]
        dead_queue_spec("s"),
    ]
    for spec in specs:
        assert "x-expires" not in spec.arguments
        assert spec.durable


def test_dead_queue_is_a_durable_classic_queue() -> None:
    assert dead_queue_spec("s") == QueueSpec("s.jobs.dead", True, {})


def test_scope_wide_queues_take_the_scope_type_so_a_cluster_node_down_does_not_strand_them() -> None:
    assert dead_queue_spec("s", "quorum").arguments == {"x-queue-type": "quorum"}
    assert event_queue_spec("s", "job", "quorum").arguments == {"x-queue-type": "quorum"}
    assert event_queue_spec("s", "job").arguments == {}


def test_specs_are_immutable_and_hashable() -> None:
    spec = delay_queue_spec("s", "job", "work")
    with pytest.raises(TypeError):
        spec.arguments["x-expires"] = 1  # type: ignore[index]
    assert hash(spec) == hash(delay_queue_spec("s", "job", "work"))


def test_unknown_queue_type_is_refused() -> None:
    with pytest.raises(ValueError, match="queue_type"):
        work_queue_spec("s", "work", "stream")  # type: ignore[arg-type]


BAD_IDENTS = ["", "a.b", "a b", "a'b", 'a"b', "Buy", "-a", "a" * 64, "a/b", "é"]


@pytest.mark.parametrize("bad", BAD_IDENTS)
def test_invalid_job_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="job id"):
        delay_queue_name("s", bad)
    with pytest.raises(ValueError, match="job id"):
        retry_queue_name("s", bad)
    with pytest.raises(ValueError, match="job id"):
        delay_queue_spec("s", bad, "work")


@pytest.mark.parametrize("bad", BAD_IDENTS)
def test_invalid_scope_is_refused(bad: str) -> None:
    for name_of in (exchange_name, dead_name, dead_queue_spec):
        with pytest.raises(ValueError, match="scope"):
            name_of(bad)
    with pytest.raises(ValueError, match="scope"):
        delay_queue_name(bad, "job")


@pytest.mark.parametrize("bad", BAD_IDENTS)
def test_invalid_queue_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="queue name"):
        work_queue_name("s", bad)
    with pytest.raises(ValueError, match="queue name"):
        delay_queue_spec("s", "job", bad)


def test_longest_valid_ident_is_accepted() -> None:
    longest = "a" * 63
    assert delay_queue_name(longest, longest) == f"{longest}.jobs.{longest}.delay"


def test_inequivalent_arg_reply_becomes_a_mismatch() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue 's.jobs.j.delay' "
        "in vhost '/': received 's.jobs.j' but current is 's.jobs.other'"
    )
    error = mismatch_from_reply(reply, "s.jobs.j.delay")
    assert isinstance(error, TopologyMismatch)
    assert error.name == "s.jobs.j.delay"
    assert error.argument == "x-dead-letter-routing-key"
    assert error.detail == "declared 's.jobs.j', existing 's.jobs.other'"
    assert "delete" in str(error)


def test_typed_and_missing_values_read_plainly() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': "
        "received none but current is the value 'e' of type 'longstr'"
    )
    error = mismatch_from_reply(reply, "q")
    assert isinstance(error, TopologyMismatch)
    assert error.detail == "declared none, existing 'e'"


def test_exchange_type_mismatch_names_the_exchange() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 's.jobs.dead' in vhost '/': "
        "received 'fanout' but current is 'direct'"
    )
    error = mismatch_from_reply(reply, "s.jobs.dead")
    assert isinstance(error, TopologyMismatch)
    assert (error.name, error.argument) == ("s.jobs.dead", "type")


def test_unparsed_inequivalent_reply_keeps_the_whole_text() -> None:
    reply = "PRECONDITION_FAILED - inequivalent arguments, phrased some other way"
    error = mismatch_from_reply(reply, "q")
    assert isinstance(error, TopologyMismatch)
    assert (error.name, error.detail) == ("q", reply)


def test_other_refusal_is_a_plain_scheduler_error() -> None:
    reply = (
        "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': "
        "routing_key_but_no_dlx_defined"
    )
    error = mismatch_from_reply(reply, "q")
    assert type(error) is SchedulerError
    assert reply in str(error)
