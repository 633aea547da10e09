"""Celery 5 beat + a prefork worker on the same RabbitMQ, J one-second periodic tasks (the peer setup).

Configured from the environment: BENCH_SCOPE (the queue and exchange are `<scope>.celery`), BENCH_JOBS,
BENCH_RUNS_DIR and AMQP_URL. Beat's schedule has no fixed grid: an entry is due `run_every` after it was last
sent. So lateness is task start minus the fire time beat itself intended, `last_run_at + run_every` of the entry
it is sending, which `SlotStampingScheduler` passes to the task as a keyword argument. Each worker process
appends its runs to its own file with unbuffered writes (nothing is lost when the pool is stopped).

    celery -A tests.bench.peers.celery_app worker --pool=prefork --concurrency=2
    celery -A tests.bench.peers.celery_app beat -S tests.bench.peers.celery_app:SlotStampingScheduler
"""

from __future__ import annotations

import copy
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from celery.beat import Scheduler
from celery.utils.time import maybe_make_aware

SCOPE = os.environ.get("BENCH_SCOPE", "bench")
QUEUE = f"{SCOPE}.celery"
JOBS = int(os.environ.get("BENCH_JOBS", "0"))
RUNS_DIR = Path(os.environ.get("BENCH_RUNS_DIR", "/tmp"))

app = Celery("bench", broker=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_ignore_result=True,
    result_backend=None,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    timezone="UTC",
    enable_utc=True,
    beat_schedule={
        f"j{i:04d}": {"task": "bench.tick", "schedule": timedelta(seconds=1), "args": (f"j{i:04d}",)}
        for i in range(JOBS)
    },
)

_fd: int | None = None


def _runs_fd() -> int:
    global _fd
    if _fd is None:
        path = RUNS_DIR / f"celery-{os.getpid()}.jsonl"
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _fd


@app.task(name="bench.tick", ignore_result=True)
def tick(job_id: str, intended: float | None = None) -> None:
    started = time.time()
    os.write(_runs_fd(), (json.dumps([job_id, intended, started, 1]) + "\n").encode())


class SlotStampingScheduler(Scheduler):
    """Beat's in-memory scheduler, passing each send's intended fire time to the task."""

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        last = maybe_make_aware(entry.last_run_at)
        intended = last.timestamp() + entry.schedule.run_every.total_seconds()
        stamped = copy.copy(entry)
        stamped.kwargs = {**entry.kwargs, "intended": intended}
        super().apply_entry(stamped, producer)
