"""The event decisions, pure: patterns and topics, CEL verdicts, what one event does to one job, run ids,
subscriptions, the triggered count, binding plans and which event queues a worker consumes (DESIGN section 13)."""

from __future__ import annotations

import uuid

import pytest

from shared.definitions import load_definition
from shared.errors import ConfigError
from shared.events import bindings, filters, topics
from shared.events.decide import (
    Candidate,
    EventAction,
    decide,
    event_run_id,
    subscriptions,
    subscriptions_of,
    triggered,
    upstream_of,
)
from shared.events.envelope import BadEvent, event_id, outcome_message_id, read_payload
from shared.events.filters import FilterResult, Verdict
from shared.events.subscriptions import wanted
from tests.support.rows import job_row


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("pipeline.collection.completed", "pipeline.collection.completed"),
        ("data.*", "data.*"),
        ("webhooks.#", "webhooks.#"),
        ("logs.**", "logs.#"),  # seed 003's `**` is RabbitMQ's `#`
        ("**", "#"),
        ("a.**.z", "a.#.z"),
    ],
)
def test_patterns_are_stored_as_rabbitmq_takes_them(given: str, stored: str) -> None:
    assert topics.normalize_pattern(given) == stored


@pytest.mark.parametrize("bad", ["", "a..b", "a.b c", "a.*x", "a.***", "a/b", "x" * 300, "é"])
def test_invalid_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        topics.normalize_pattern(bad)


@pytest.mark.parametrize(
    ("pattern", "topic", "hit"),
    [
        ("data.*", "data.ingestion", True),
        ("data.*", "data", False),
        ("data.*", "data.ingestion.done", False),
        ("data.#", "data", True),
        ("data.#", "data.a.b.c", True),
        ("#", "anything.at.all", True),
        ("*.completed", "pipeline.completed", True),
        ("*.completed", "pipeline.collection.completed", False),
        ("pipeline.#.completed", "pipeline.completed", True),
        ("pipeline.#.completed", "pipeline.collection.step.completed", True),
        ("pipeline.#.completed", "pipeline.collection.failed", False),
        ("job.extract.succeeded", "job.extract.succeeded", True),
        ("job.extract.succeeded", "job.extract.failed", False),
        ("job.*.failed", "job.extract.failed", True),
    ],
)
def test_topic_matching_is_rabbitmqs(pattern: str, topic: str, hit: bool) -> None:
    assert topics.matches(pattern, topic) is hit


@pytest.mark.parametrize("bad", ["", "a.*", "a.#", "a..b", "has space"])
def test_emitted_topics_have_no_wildcards(bad: str) -> None:
    with pytest.raises(ValueError):
        topics.check_topic(bad)


@pytest.mark.parametrize(
    ("expression", "payload", "verdict"),
    [
        (None, {}, Verdict.PASS),
        ("event.rows_count > 1000", {"rows_count": 5000}, Verdict.PASS),
        ("event.rows_count > 1000", {"rows_count": 10}, Verdict.FILTERED),
        ('event.rows_count > 1000 && event.source in ["api", "batch"]', {"rows_count": 2000, "source": "api"},
         Verdict.PASS),
        ('event.rows_count > 1000 && event.source in ["api", "batch"]', {"rows_count": 2000, "source": "ftp"},
         Verdict.FILTERED),
        ("event.rows_count > 1000", {}, Verdict.ERROR),  # no such field
        ("event.rows_count > 1000", {"rows_count": "many"}, Verdict.ERROR),  # wrong type
        ("event.rows_count", {"rows_count": 3}, Verdict.ERROR),  # not a bool
        ('has(event.level) && event.level == "ERROR"', {}, Verdict.FILTERED),
    ],
)  # fmt: skip
def test_filter_verdicts(expression: str | None, payload: dict[str, object], verdict: Verdict) -> None:
    assert filters.evaluate(expression, payload).verdict is verdict


@pytest.mark.parametrize("bad", ["event.rows_count >", "event.x +* 2", "foo(", "", " "])
def test_a_bad_filter_does_not_compile(bad: str) -> None:
    with pytest.raises(filters.FilterError):
        filters.compile_filter(bad)


PASS, FILTERED, ERROR = FilterResult(Verdict.PASS), FilterResult(Verdict.FILTERED), FilterResult(Verdict.ERROR, "x")


@pytest.mark.parametrize(
    ("exists", "enabled", "policy", "result", "action"),
    [
        (True, True, "drop", PASS, EventAction.RUN),
        (True, True, "hold", FILTERED, EventAction.FILTERED),
        (True, True, "drop", ERROR, EventAction.PARK),
        (True, False, "drop", PASS, EventAction.DROP_PAUSED),
        (True, False, "hold", PASS, EventAction.HOLD),
        (True, False, "hold", FILTERED, EventAction.FILTERED),  # the filter first: never held for nothing
        (True, False, "hold", ERROR, EventAction.PARK),
        (False, False, "drop", PASS, EventAction.UNKNOWN_JOB),
    ],
)
def test_what_one_event_does_to_one_job(
    exists: bool, enabled: bool, policy: str, result: FilterResult, action: EventAction
) -> None:
    assert decide(exists, enabled, policy, result).action is action


def test_the_run_id_of_a_job_and_an_event_is_stable_and_distinct() -> None:
    assert event_run_id("s", "load", "e1") == event_run_id("s", "load", "e1")
    assert len({event_run_id("s", "load", "e1"), event_run_id("s", "load", "e2"), event_run_id("s", "x", "e1"),
                event_run_id("t", "load", "e1")}) == 4  # fmt: skip


def test_an_event_id_is_its_message_id_or_derived_from_topic_and_body() -> None:
    assert event_id("abc", "t.x", b"{}") == "abc"
    assert event_id(None, "t.x", b"{}") == event_id("", "t.x", b"{}")
    assert event_id(None, "t.x", b"{}") != event_id(None, "t.y", b"{}")
    run = uuid.uuid4()
    assert outcome_message_id(run, "succeeded") == outcome_message_id(run, "succeeded")
    assert outcome_message_id(run, "succeeded") != outcome_message_id(run, "failed")


@pytest.mark.parametrize("body", [b"[1]", b"not json", b"\xff", b'"x"', b"{" * 10 + b"}" * 10, b"x" * 70000])
def test_an_event_body_is_a_json_object(body: bytes) -> None:
    with pytest.raises(BadEvent):
        read_payload(body)


def test_an_empty_event_body_is_an_empty_payload() -> None:
    assert read_payload(b"") == {} and read_payload(b'{"a": 1}') == {"a": 1}


def test_on_success_is_a_subscription_to_the_upstream_success() -> None:
    extract = job_row("extract", on_success=["load"])
    load = job_row("load", triggers_on=["data.#"])
    assert subscriptions(load, [extract, load]) == ["data.#", "job.extract.succeeded"]
    assert subscriptions(extract, [extract, load]) == []


def test_the_subscriptions_of_every_job_at_once_are_each_jobs_own() -> None:
    jobs = [
        job_row("a", on_success=["b", "c", "c"], triggers_on=["x.#"]),
        job_row("b", on_success=["c"], triggers_on=["x.#", "y"]),
        job_row("c", triggers_on=["y"]),
        job_row("d", on_success=["gone", "a"]),
        job_row("e"),
    ]
    assert subscriptions_of(jobs) == {job.job_id: subscriptions(job, jobs) for job in jobs}
    assert subscriptions_of(jobs)["c"] == ["job.a.succeeded", "job.b.succeeded", "y"]


def test_an_outcome_event_names_its_upstream_run() -> None:
    run = uuid.uuid4()
    assert upstream_of("job.extract.succeeded", {"run_id": str(run)}) == run
    assert upstream_of("pipeline.collection.completed", {"run_id": str(run)}) is None
    assert upstream_of("job.extract.succeeded", {"run_id": "nope"}) is None


def test_triggered_counts_matching_jobs_whose_filter_passes() -> None:
    jobs = [
        Candidate("big", ["pipeline.collection.completed"], "event.rows_count > 1000", True, "drop"),
        Candidate("all", ["pipeline.#"], None, True, "drop"),
        Candidate("paused-drop", ["pipeline.#"], None, False, "drop"),
        Candidate("paused-hold", ["pipeline.#"], None, False, "hold"),
        Candidate("other", ["data.*"], None, True, "drop"),
        Candidate("broken", ["pipeline.#"], "event.nope > 1", True, "drop"),
    ]
    assert triggered(jobs, "pipeline.collection.completed", {"rows_count": 5000}) == ["all", "big", "paused-hold"]
    assert triggered(jobs, "pipeline.collection.completed", {"rows_count": 5}) == ["all", "paused-hold"]
    assert triggered(jobs, "data.x", {}) == ["other"]


def test_binding_plan_binds_new_patterns_and_unbinds_old_ones() -> None:
    before = [job_row("a", triggers_on=["x.*", "y.#"]), job_row("up", on_success=["a"])]
    after = [job_row("a", triggers_on=["y.#", "z"]), job_row("up", on_success=[])]
    assert bindings.plan(before, after, ["a"]) == {"a": (["y.#", "z"], ["job.up.succeeded", "x.*"], True)}
    # the upstream's change moves the downstream's binding
    assert bindings.plan(before, after, ["up"]) == {"a": (["y.#", "z"], ["job.up.succeeded", "x.*"], True)}
    # a job that no longer subscribes loses its queue
    assert bindings.plan([job_row("a", triggers_on=["x"])], [job_row("a")], ["a"]) == {"a": ([], ["x"], False)}
    assert bindings.plan([job_row("a")], [job_row("a")], ["a"]) == {}


def test_a_worker_consumes_the_event_queues_of_its_jobs_unless_held() -> None:
    jobs = [
        job_row("a", triggers_on=["x"]),
        job_row("b", triggers_on=["x"], enabled=False, on_paused_event="hold"),
        job_row("c", triggers_on=["x"], enabled=False, on_paused_event="drop"),
        job_row("d"),
        job_row("e", triggers_on=["x"], queue="elsewhere"),
    ]
    assert wanted(jobs, ["a", "b", "c", "d"]) == {"a": ["x"], "c": ["x"]}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"triggers_on": ["a..b"]}, "triggers_on"),
        ({"triggers_on": ["a"], "filter": "event.rows_count >"}, "filter"),
        ({"filter": "event.a > 1"}, "filter"),  # a filter without subscriptions
        ({"triggers_on": ["a"], "on_paused_event": "later"}, "on_paused_event"),
    ],
)
def test_a_bad_subscription_is_refused_at_load_naming_job_and_field(extra: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_definition({"job_id": "load", "reschedule_mode": "none", **extra}, source="jobs.toml")
    assert "job 'load'" in str(refused.value) and field in str(refused.value)


def test_a_definition_stores_double_star_as_hash_once() -> None:
    definition = load_definition({"job_id": "w", "reschedule_mode": "none", "triggers_on": ["logs.**", "logs.#"]})
    assert definition.triggers_on == ("logs.#",)


def test_trigger_counts_become_gauges_for_the_served_jobs_only() -> None:
    from prometheus_client import CollectorRegistry

    from shared.job_metrics import publish_trigger_counts
    from shared.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    jobs = [job_row("a"), job_row("b", queue="other")]
    publish_trigger_counts(metrics, "s", jobs, ["a"], {"a": {"event": 3, "scheduler": 7}, "b": {"event": 1}})
    value = metrics.registry.get_sample_value
    assert value("scheduler_job_trigger_runs", {"scope": "s", "job_id": "a", "trigger_source": "event"}) == 3
    assert value("scheduler_job_trigger_runs", {"scope": "s", "job_id": "a", "trigger_source": "scheduler"}) == 7
    assert value("scheduler_job_trigger_runs", {"scope": "s", "job_id": "b", "trigger_source": "event"}) is None
