"""Group commit: requests made together go to PostgreSQL (or anywhere) as one batch, one round trip for all.

A `Coalescer` gathers the requests submitted in one turn of the event loop, and, while a batch is in flight,
every request submitted meanwhile: when the batch returns, they go together as the next one. So an idle worker
sends a lone request at once (no timer, no added latency), and a busy one (a herd of deliveries, confirms that
arrive together) sends one statement for many. One batch at a time per coalescer: a batch's requests are
answered in order, each caller gets its own result, or the batch's exception.

A request may also be allowed to wait for company (`linger`, seconds): the batch it opens is then sent when the
earliest deadline of its requests comes (or at once when one that may not wait joins, or the batch is full). Work
whose result is not needed at once (a slot claimed a lead ahead of its start) trades a few milliseconds for
one statement shared with the requests of those milliseconds.

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
        enough: int | None = None,
    ) -> None:
        self._flush = flush
        self._orphaned = orphaned  # told of a result whose caller stopped waiting (it may hold something to undo)
        self.max_batch = max_batch
        self.enough = min(enough or max_batch, max_batch)  # a lingering batch this large goes at once
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._busy = False  # a batch is in flight, or is gathering its turn
        self._task: asyncio.Task[None] | None = None
        self._gathering: asyncio.Future[None] | None = None  # set while the first request lingers for company
        self._deadline = 0.0  # when the lingering batch goes (event loop time)
        self._timer: asyncio.TimerHandle | None = None
        self.batches = 0  # how many batches were sent, for how many requests (tests, benchmarks)
        self.submitted = 0

    async def submit(self, request: Req, linger: float = 0.0) -> Res:
        """`flush`'s result for `request`, sent with the requests made together with it; with `linger`, it may wait
        that long for more."""
        self.submitted += 1
        if self._busy:
            if self._gathering is not None:
                self._hurry(linger, len(self._pending) + 2)
            return await self._wait(request)
        self._busy = True
        try:
            if linger > 0:
                await self._gather(linger)
            else:
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

    async def _gather(self, linger: float) -> None:
        """The first request of a batch waits up to `linger` for company (less if a later one may wait less)."""
        loop = asyncio.get_running_loop()
        self._gathering = loop.create_future()
        self._deadline = loop.time() + linger
        self._timer = loop.call_at(self._deadline, self._go)
        try:
            await self._gathering
        finally:
            self._timer.cancel()
            self._gathering = self._timer = None

    def _hurry(self, linger: float, size: int) -> None:
        """A request joined the lingering batch: the batch goes by its deadline, or now when it is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(linger, 0.0)
        if size >= self.enough or linger <= 0:
            self._go()
        elif deadline < self._deadline and self._timer is not None:
            self._timer.cancel()
            self._deadline = deadline
            self._timer = loop.call_at(deadline, self._go)

    def _go(self) -> None:
        if self._gathering is not None and not self._gathering.done():
            self._gathering.set_result(None)

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
