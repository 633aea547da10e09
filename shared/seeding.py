"""The queues one job needs, declared from its row: used by the worker and by the control layer.

Seeding, pausing, resuming, changing and deleting jobs are operator actions and live in `shared.control`.
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel

from shared import topology
from shared.store.jobs import JobRow


async def declare_for(channel: AbstractChannel, job: JobRow) -> None:
    """Exchange, parking, work, delay and retry queues for one job (idempotent)."""
    await topology.declare_scope(channel, job.scope)
    await topology.declare_job(channel, job.scope, job.job_id, job.queue, job.queue_type)  # type: ignore[arg-type]
