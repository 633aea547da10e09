"""Group commit: requests made together go to PostgreSQL (or anywhere) as one batch, one round trip for all.

A `Coalescer` gathers the requests submitted in one turn of the event loop, and, while a batch is in flight,
every request submitted meanwhile: when the batch returns, they go together as the next one. So an idle worker
sends a lone request at once (no timer, no added latency), and a busy one (a herd of deliveries, confirms that
arrive together) sends one statement for many. One batch at a time per coalescer: a batch's requests are
answered in order, each caller gets its own result, or the batch's exception.

A request found alone at the end of its turn (spread load: most of them) is sent from its caller's own task,
sparing a task and a future per batch. Its caller's cancellation then interrupts the flush, which undoes what it
took as on any error (every flush here does); a batch of many goes in a task of its own, which no one caller's
cancellation interrupts (an answer nobody waits for any more goes to `orphaned`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class Coalescer(Generic[Req, Res]):
    """Runs `flush(requests) -> results` (one result per request, in order) over the requests gathered."""

    def __init__(
        self,
        flush: Callable[[list[Req]], Awaitable[Sequence[Res]]],
        max_batch: int = 1000,
        orphaned: Callable[[Req, Res], None] | None = None,
    ) -> None:
        self._flush = flush
        self._orphaned = orphaned  # told of a result whose caller stopped waiting (it may hold something to undo)
        self.max_batch = max_batch
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._busy = False  # a batch is in flight, or is gathering its turn
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # how many batches were sent, for how many requests (tests, benchmarks)
        self.submitted = 0

    async def submit(self, request: Req) -> Res:
        self.submitted += 1
        if self._busy:
            return await self._wait(request)
        self._busy = True
        try:
            await asyncio.sleep(0)  # the callbacks already due run first: what they submit in this turn goes too
        except BaseException:
            self._next()
            raise
        if self._pending:  # company: one batch for all, in a task of its own
            return await self._wait(request, first=True)
        self.batches += 1
        try:
            results = await self._flush([request])
        finally:
            self._next()
        return results[0]

    async def _wait(self, request: Req, first: bool = False) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        if first:
            self._pending.insert(0, (request, future))
            self._next()
        else:
            self._pending.append((request, future))
        return await future

    def _next(self) -> None:
        """The batch in flight is done (or about to go): what was submitted meanwhile goes as the next one."""
        if self._pending:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="coalesced-batches")
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                batch = [(r, f) for r, f in batch if not f.cancelled()]
                if batch:
                    await self._run(batch)
        finally:
            self._busy = False

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        self.batches += 1
        try:
            results = await self._flush([request for request, _ in batch])
        except Exception as exc:  # every caller of the batch gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (request, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
            elif self._orphaned is not None:
                self._orphaned(request, result)
