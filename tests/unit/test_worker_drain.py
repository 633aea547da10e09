"""Stopping a worker (`Worker._drain`): a task that starts another as it ends (a claim ahead hands its part at the
slot to a task of its own) has that one waited for, and cancelled past the grace, before the worker says it stopped:
its clean-up (giving a claim back) then runs while the pool is still open."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from shared.settings import Settings
from shared.worker import Worker


def _worker(grace: float) -> Worker:
    worker = Worker("drain-probe", Settings(shutdown_grace_sec=grace))
    worker._env = SimpleNamespace(stopping=asyncio.Event())  # type: ignore[assignment]
    return worker


def _track(worker: Worker, coro: Any) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro)
    worker._tasks.add(task)
    task.add_done_callback(worker._tasks.discard)
    return task


async def test_a_task_started_while_draining_is_cancelled_and_cleans_up_before_the_worker_stops() -> None:
    worker = _worker(grace=0.0)
    cleaned: list[str] = []

    async def at_slot() -> None:
        try:
            await asyncio.sleep(60)  # waits for a slot far ahead
        except asyncio.CancelledError:
            cleaned.append("claim given back")
            raise

    async def delivery() -> None:
        await asyncio.sleep(0)
        _track(worker, at_slot())  # its last step: the part at the slot, in a task of its own

    _track(worker, delivery())
    await asyncio.wait_for(worker._drain(), 5)
    assert cleaned == ["claim given back"]
    assert not worker._tasks


async def test_tasks_started_while_draining_finish_within_the_grace() -> None:
    worker = _worker(grace=5.0)
    done: list[str] = []

    async def at_slot() -> None:
        await asyncio.sleep(0.05)
        done.append("ran at its slot")

    async def delivery() -> None:
        await asyncio.sleep(0.01)
        _track(worker, at_slot())

    _track(worker, delivery())
    await asyncio.wait_for(worker._drain(), 5)
    assert done == ["ran at its slot"]
