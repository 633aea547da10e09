"""Runs claimed ahead that start at one slot (shared.lead) share one session (shared.coalesce): their run locks
are taken, and the runs started, in one statement; the runs that end together are recorded, and their locks
released, in one statement.

A `Shift` is that session: one pooled connection holding the run locks of the runs started in one batch, each
for the whole of its run (a session lock is re-entrant: the start statement keeps two runs of one batch from
sharing a key, and a shift never takes in runs of a later batch). It offers the run protocol the statements a
run's connection is asked for, one at a time, and goes back to the pool when its last run is done: tidy when
every run gave its lock back, else reset in full (which releases whatever was left). If PostgreSQL drops it, every
run on it loses its lock and is cancelled (shared.lock_watch), as a run alone on its connection would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.coalesce import Coalescer
from shared.store import runs_batch
from shared.store.pool import left_tidy, spoil
from shared.store.runs_batch import Finished, SlotStart


def _in_turn(name: str) -> Callable[..., Awaitable[Any]]:
    """The connection's method `name`, for a shift: its members' statements go one at a time."""

    async def method(self: Shift, *args: Any, **kwargs: Any) -> Any:
        async with self._turn:
            return await getattr(self.conn, name)(*args, **kwargs)

    method.__name__ = name
    return method


class Shift:
    """The session of the runs started in one batch: a connection used by one statement at a time."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection, members: int) -> None:
        self.pool = pool
        self.conn = conn
        self.members = members
        self.tidy = True
        self._turn = asyncio.Lock()
        self.finishes: Coalescer[Finished, int] = Coalescer(self._finish)

    # -- what the run protocol asks of a run's connection, one statement at a time
    execute = _in_turn("execute")
    fetchval = _in_turn("fetchval")
    fetchrow = _in_turn("fetchrow")
    fetch = _in_turn("fetch")

    def __getattr__(self, name: str) -> Any:  # is_closed, termination listeners, the pool's tidy marks
        return getattr(self.conn, name)

    async def finish(self, finished: Finished) -> bool:
        """Record a run's outcome with those that end with it; True when its lock (if given) was released."""
        released = await self.finishes.submit(finished)
        return released > 0 or finished.release_key is None

    async def _finish(self, finished: list[Finished]) -> Sequence[int]:
        async with self._turn:
            released = await runs_batch.finish_each(self.conn, finished)
        if released != sum(f.release_key is not None for f in finished):
            spoil(self.conn)  # a lock this session did not hold: reset in full rather than guess
            self.tidy = False
        return [1 if f.release_key is not None else 0 for f in finished]

    async def leave(self, tidy: bool) -> None:
        """One run is done with the session (`tidy`: it holds no lock any more); the last one gives it back."""
        self.tidy = self.tidy and tidy
        self.members -= 1
        if self.members == 0:
            if self.tidy:
                left_tidy(self.conn)
            await self.pool.release(self.conn)


class SlotBatch:
    """The worker's batched starts at the slot (one per worker)."""

    def __init__(self, pool: asyncpg.Pool, worker_id: str, max_batch: int = 500) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.starts: Coalescer[SlotStart, tuple[Shift, int | None, datetime | None]] = Coalescer(
            self._start, max_batch=max_batch, orphaned=self._orphaned
        )

    async def start(self, start: SlotStart) -> tuple[Shift, int | None, datetime | None]:
        """`runs.lock_and_start` with the runs starting with it: the shift the run's lock lives on, the key taken
        (None: taken by another run, or none needed) and started_at (None: not started). The caller leaves the
        shift when done with it."""
        return await self.starts.submit(start)

    async def _start(self, starts: list[SlotStart]) -> list[tuple[Shift, int | None, datetime | None]]:
        conn = await self.pool.acquire()
        try:
            found = await runs_batch.lock_and_start_each(conn, starts, self.worker_id)
        except BaseException:
            spoil(conn)  # whatever the statement took goes with the reset
            await self.pool.release(conn)
            raise
        shift = Shift(self.pool, conn, len(starts))
        return [(shift, key, started) for key, started in found]

    def _orphaned(self, start: SlotStart, found: tuple[Shift, int | None, datetime | None]) -> None:
        """A start whose run stopped waiting (the worker stops): its lock goes with the shift's reset."""
        shift = found[0]
        asyncio.get_running_loop().create_task(shift.leave(tidy=found[1] is None), name="slot-batch-leave")
