"""Stopping a run another worker asked to cancel (overlap=cancel_other), across processes.

The slot that finds the lock taken writes a request row (`scheduler.run_cancels`) and sends NOTIFY
`scheduler_cancel` with the run id, and does both again on every poll while it waits (buffered). The worker running
that run listens on the connection that holds the run lock, from just before the handler starts: a notification
cancels the handler at once (its subprocess group killed by `shared.procs`); the request row, read once after
LISTEN, catches a request made before the worker listened. Only the run lock says the run has stopped: the
waiting slot runs when it takes the lock itself, which the cancelled run gives back in the statement that records
it as cancelled (or, for a sync handler's thread that cannot be interrupted, once that thread is done).

The handler runs in a child task here, so a notification that arrives as the handler returns cancels nothing
(`Task.cancel` on a finished task does nothing); cancelling the worker's own task instead could land in the
recording of the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg
import structlog

from shared.dependencies import DB_ERRORS, describe
from shared.store import overlaps

log = structlog.get_logger("shared.cancel_watch")

T = TypeVar("T")


class CancelWatch:
    """While a run of a cancel_other job executes: stop it when asked. Does nothing when not `enabled`."""

    def __init__(self, conn: asyncpg.Connection, run_id: uuid.UUID, enabled: bool) -> None:
        self.conn = conn
        self.run_id = run_id
        self.enabled = enabled
        self.requested = False
        self._watching = False
        self._inner: asyncio.Future[Any] | None = None  # the handler's task, while watching

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._watching and payload == str(self.run_id):
            self._request()

    def _request(self) -> None:
        self.requested = True
        if self._inner is not None:
            self._inner.cancel()  # does nothing once the handler has returned

    async def __aenter__(self) -> CancelWatch:
        if self.enabled:
            self._watching = True
            try:
                await self.conn.add_listener(overlaps.CANCEL_CHANNEL, self._on_notify)
                if await overlaps.cancel_requested(self.conn, self.run_id):
                    self._request()
            except DB_ERRORS as exc:
                # the run goes on unwatched (the connection holding its lock is in trouble: LockWatch has it);
                # a slot waiting to replace it runs when it ends, or gives up after the grace
                log.warning("run.cancel_watch_failed", error=describe(exc))
        return self

    async def __aexit__(self, *_: object) -> None:
        self._watching = False
        if self.enabled:
            with contextlib.suppress(Exception):
                await self.conn.remove_listener(overlaps.CANCEL_CHANNEL, self._on_notify)

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work`; when watching, in a child task a cancel request cancels (CancelledError out of here,
        with `stopped_by_request` true)."""
        if not self.enabled:
            return await work
        inner: asyncio.Future[T] = asyncio.ensure_future(work)
        self._inner = inner
        if self.requested:
            inner.cancel()
        return await inner

    def stopped_by_request(self) -> bool:
        """A CancelledError came from a request, not from this worker's own task being cancelled (a timeout, a
        shutdown): the caller records the run as cancelled."""
        task = asyncio.current_task()
        own = task is not None and task.cancelling() > 0
        return self.requested and not own and self._inner is not None and self._inner.cancelled()

    async def reason(self) -> str:
        """The run's error text, from the request (removed: it has been served)."""
        taken = None
        with contextlib.suppress(Exception):
            taken = await overlaps.take_request(self.conn, self.run_id)
        if taken is None:
            return "cancelled: a newer slot of the job needed the lock (overlap=cancel_other)"
        why, by = taken
        return f"cancelled: {why}" + (f" (run {by})" if by is not None else "")
