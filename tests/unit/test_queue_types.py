"""Queue types of work queues (pure): the scope default, agreement per work queue, the refusal lines."""

from __future__ import annotations

import pytest

from shared.definitions import JobDefinition, QueueType
from shared.errors import ConfigError
from shared.queue_types import Member, check_agreement, disagreements, for_queues, with_default
from shared.topology import mismatch_from_reply


def test_default_applies_only_where_the_job_sets_no_type() -> None:
    unset = JobDefinition(job_id="a", interval_seconds=5)
    own = JobDefinition(job_id="b", interval_seconds=5, queue_type=QueueType.CLASSIC)
    resolved = with_default([unset, own], "quorum")
    assert [d.queue_type for d in resolved] == [QueueType.QUORUM, QueueType.CLASSIC]


def test_disagreeing_jobs_are_named_per_work_queue() -> None:
    members = [Member("a", "w", "quorum"), Member("b", "w", "classic"), Member("c", "w", "quorum"),
               Member("d", "x", "classic")]  # fmt: skip
    assert disagreements(members) == {"w": {"classic": ["b"], "quorum": ["a", "c"]}}
    with pytest.raises(ConfigError, match=r"work queue 'w'.*classic: 'b'; quorum: 'a', 'c'"):
        check_agreement(members, "jobs.toml")


def test_queue_type_of_each_served_queue() -> None:
    members = [Member("a", "w", "quorum")]
    assert for_queues(["w", "idle"], members, "classic") == {"w": "quorum", "idle": "classic"}


def test_queue_type_refusal_names_queue_types_and_the_fix() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 's.jobs.w' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'"
    )
    text = str(mismatch_from_reply(reply, "s.jobs.w"))
    assert "'s.jobs.w' exists as a quorum queue but its jobs declare classic" in text
    assert "migrate-queues --scope s --to classic" in text
