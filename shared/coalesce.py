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
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # how many batches were sent, for how many requests (tests, benchmarks)
        self.submitted = 0

    async def submit(self, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        self.submitted += 1
        self._pending.append((request, future))
        if not self._busy:
            self._busy = True
            # its first step comes after the callbacks already due: what arrives in this turn goes too
            self._task = loop.create_task(self._drain(), name="coalesced-batches")
        return await future

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
