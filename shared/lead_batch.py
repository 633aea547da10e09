"""Claims ahead made together (shared.lead, shared.coalesce): the slots of chain messages that arrive together are
claimed, and their chains entered, in one statement; their next slots are posted side by side (each confirm
awaited by its own delivery, so a batch waits for its confirms once, not in turn); the posts confirmed together
are recorded, and their chain locks given back, in one statement.

A batch's statements run on one pooled connection, a `Lot`: the chain locks of its members live on that session
from the claim to the record. The lot goes back to the pool when every member has recorded or given its lock
back (tidy, or reset in full after any statement of it failed, which releases whatever it still held).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from shared.coalesce import Coalescer
from shared.store import runs_batch
from shared.store.pool import left_tidy, spoil
from shared.store.runs import ClaimedAhead
from shared.store.runs_batch import AheadClaim, PostedSlot


class Hold:
    """A member's chain lock, held on its lot's session until `record` or `give_back` (one of them, once)."""

    def __init__(self, lot: Lot, key: int) -> None:
        self.lot = lot
        self.key = key
        self.done = False

    @property
    def conn(self) -> asyncpg.Connection:
        return self.lot.conn

    async def record(self, posted: PostedSlot) -> None:
        """The next slot is confirmed: record it and give the lock back (raises when that statement failed:
        the lock is then given back by the lot's reset)."""
        if self.done:
            return
        self.done = True
        await self.lot.submit(posted)

    async def give_back(self) -> None:
        """Nothing was posted: give the lock back."""
        if self.done:
            return
        self.done = True
        await asyncio.shield(self.lot.submit(PostedSlot(release_key=self.key)))


class Lot:
    """One batch's connection and the chain locks its members hold on it."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection, scope: str) -> None:
        self.pool = pool
        self.conn = conn
        self.scope = scope
        self.holding = 0
        self.records: Coalescer[PostedSlot, None] = Coalescer(self._record)

    def hold(self, key: int) -> Hold:
        self.holding += 1
        return Hold(self, key)

    async def submit(self, posted: PostedSlot) -> None:
        await self.records.submit(posted)

    async def _record(self, posted: list[PostedSlot]) -> Sequence[None]:
        try:
            released = await runs_batch.record_posted_each(self.conn, self.scope, posted)
            if released != len(posted):
                spoil(self.conn)  # a lock this session did not hold: reset in full rather than guess
        except BaseException:
            spoil(self.conn)
            raise
        finally:
            self.holding -= len(posted)
            await self.settle()
        return [None] * len(posted)

    async def settle(self) -> None:
        """Back to the pool once no member holds a lock on it any more."""
        if self.holding == 0:
            left_tidy(self.conn)  # unless a failure spoiled it: then the pool's reset releases every lock
            await self.pool.release(self.conn)


class LeadBatch:
    """The worker's batched claims ahead (one per worker, shared by its deliveries)."""

    def __init__(
        self, pool: asyncpg.Pool, scope: str, worker_id: str, max_batch: int = 500, enough: int | None = None
    ) -> None:
        """`enough`: a batch lingering for company goes once it holds this many claims (half the worker's
        prefetch: the broker sends no more while the rest are unacked)."""
        self.pool = pool
        self.scope = scope
        self.worker_id = worker_id
        self.claims: Coalescer[AheadClaim, tuple[ClaimedAhead, Hold | None]] = Coalescer(
            self._claim, max_batch=max_batch, orphaned=self._orphaned, enough=enough
        )

    async def claim(self, claim: AheadClaim, linger: float = 0.0) -> tuple[ClaimedAhead, Hold | None]:
        """`runs.claim_and_enter_chain` for one slot, sent with the claims made together with it (within `linger`
        seconds, shared.coalesce). A claimed slot comes with the `Hold` of its chain lock, to record or give
        back."""
        return await self.claims.submit(claim, linger)

    async def _claim(self, claims: list[AheadClaim]) -> list[tuple[ClaimedAhead, Hold | None]]:
        conn = await self.pool.acquire()
        lot = Lot(self.pool, conn, self.scope)
        try:
            answers = await runs_batch.claim_and_enter_each(conn, self.scope, claims, self.worker_id)
        except BaseException:
            spoil(conn)  # whatever the statement took goes with the reset
            await self.pool.release(conn)
            raise
        found = [(a, lot.hold(c.chain_key) if a.claimed else None) for c, a in zip(claims, answers, strict=True)]
        await lot.settle()
        return found

    def _orphaned(self, claim: AheadClaim, found: tuple[ClaimedAhead, Hold | None]) -> None:
        """A claim whose delivery stopped waiting (the worker stops): its chain lock goes back. (The claim itself
        stays this worker's until a copy of the message takes it over, as for a claim interrupted on one slot.)"""
        hold = found[1]
        if hold is not None:
            asyncio.get_running_loop().create_task(hold.give_back(), name="lead-batch-give-back")
