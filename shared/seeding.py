"""The queues one job needs, declared from its row: used by the worker and by the control layer (the retry queue
on first need: `declare_retry_for`).

Seeding, pausing, resuming, changing and deleting jobs are operator actions and live in `shared.control`.
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel

from shared import topology
from shared.store.jobs import JobRow


async def declare_for(channel: AbstractChannel, job: JobRow, scope_type: topology.QueueType) -> None:
    """Exchange, parking (of the scope's type), work and delay queues for one job (idempotent)."""
    await topology.declare_scope(channel, job.scope, scope_type)
    await topology.declare_job(channel, job.scope, job.job_id, job.queue, job.queue_type)  # type: ignore[arg-type]


async def declare_retry_for(channel: AbstractChannel, job: JobRow) -> None:
    """The job's retry queue, declared on its first retry or buffered slot (idempotent)."""
    await topology.declare_retry_queue(channel, job.scope, job.job_id, job.queue, job.queue_type)  # type: ignore[arg-type]
