"""Group commit: requests made together go to PostgreSQL (or anywhere) as one batch, one round trip for all.

A `Coalescer` gathers the requests submitted in one turn of the event loop, and, while a batch is in flight,
every request submitted meanwhile: when the batch returns, they go together as the next one. So an idle worker
sends a lone request at once (no timer, no added latency), and a busy one (a herd of deliveries, confirms that
arrive together) sends one statement for many. One batch at a time per coalescer: a batch's requests are
answered in order, each caller gets its own result, or the batch's exception.
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
        self._busy = False  # a batch is in flight, or is scheduled to go at the next turn of the loop
        self.batches = 0  # how many batches were sent, for how many requests (tests, benchmarks)
        self.submitted = 0

    async def submit(self, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        self.submitted += 1
        self._pending.append((request, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start)  # after the callbacks already due: what arrived in this turn goes too
        return await future

    def _start(self) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        batch = [(r, f) for r, f in batch if not f.cancelled()]
        if not batch:
            self._next()
            return
        asyncio.get_running_loop().create_task(self._run(batch), name="coalesced-batch")

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        self.batches += 1
        try:
            results = await self._flush([request for request, _ in batch])
        except BaseException as exc:  # every caller of the batch gets it (cancellation included)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                self._next()
                raise
        else:
            for (request, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
                elif self._orphaned is not None:
                    self._orphaned(request, result)
        self._next()

    def _next(self) -> None:
        if self._pending:
            asyncio.get_running_loop().call_soon(self._start)
        else:
            self._busy = False
