"""The order in which a starting worker declares its jobs' delay queues and consumes its work queues."""

from __future__ import annotations

from shared.lanes import by_queue
from tests.support.rows import job_row


def test_queues_with_fewer_jobs_come_first_each_with_its_own_jobs() -> None:
    jobs = [job_row(f"b{i}", queue="big") for i in range(3)]
    jobs += [job_row("f0", queue="fast"), job_row("o0", queue="other-worker"), job_row("m0", queue="mid")]
    jobs += [job_row("m1", queue="mid")]
    order = by_queue(["big", "mid", "fast", "idle"], jobs)
    assert [(queue, [j.job_id for j in queue_jobs]) for queue, queue_jobs in order] == [
        ("idle", []),  # consumed at once: nothing of it to declare
        ("fast", ["f0"]),
        ("mid", ["m0", "m1"]),
        ("big", ["b0", "b1", "b2"]),
    ]
