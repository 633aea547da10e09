"""Cancelling a run whose lock is gone: the run lock lives on a PostgreSQL session, and a session that ends
takes the lock with it."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg


class LockWatch:
    """While a locked run executes: if PostgreSQL drops the connection that holds the lock, cancel the run.
    Without the lock another worker may start the same job, so going on would break "never run twice at once"."""

    def __init__(self, conn: asyncpg.Connection, enabled: bool) -> None:
        self.conn = conn
        self.enabled = enabled
        self.lost = False
        self.watching = False
        self._task = asyncio.current_task()

    def _on_terminated(self, _: object) -> None:
        # asyncpg calls termination listeners with call_soon: this may run after the handler has returned and the
        # watch ended, and a cancel then would kill the recording of the run's outcome instead of the run.
        if not self.watching:
            return
        self.lost = True
        if self._task is not None:
            self._task.cancel()

    def __enter__(self) -> LockWatch:
        if self.enabled:
            self.watching = True
            self.conn.add_termination_listener(self._on_terminated)
        return self

    def __exit__(self, *_: object) -> None:
        self.watching = False
        if self.enabled:
            with contextlib.suppress(Exception):
                self.conn.remove_termination_listener(self._on_terminated)
