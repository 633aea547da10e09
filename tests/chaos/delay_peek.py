"""What a crowded delay queue holds: the soak's check "one chain per job" looks inside before it calls a second
message a second chain.

A delay queue may hold more than one message without a second chain: a second copy of the same slot (a publish
retried after its node died before confirming; quorum queues dead-letter at least once), a message of an older
epoch (a reseed or `set` replaced the chain; it is dropped as stale when it fires), or a message already past its
time that the broker has not dead-lettered yet (`overdue`: a broker matter, reported apart). A second chain is two
different future slots of the job's current epoch: only that breaks the rule.

`peek` reads the messages with basic.get without acknowledging them and closes its channel, which returns them to
the queue as they were (their expiration unchanged).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import aio_pika

from tests.chaos.faultlog import parse_time

OVERDUE_AFTER = timedelta(seconds=5)


async def peek(url: str, queue: str, limit: int = 20) -> list[dict[str, Any]]:
    """Up to `limit` messages of `queue` (body fields and expiration), left in the queue."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        target = await channel.get_queue(queue, ensure=False)
        found = []
        for _ in range(limit):
            message = await target.get(no_ack=False, fail=False)
            if message is None:
                break
            try:
                body = json.loads(message.body)
            except ValueError:
                body = {"unreadable": message.body[:100].decode(errors="replace")}
            found.append({**body, "expiration": message.expiration, "redelivered": message.redelivered})
        await channel.close()  # unacknowledged: every message goes back
        return found
    finally:
        await connection.close()


def classify(messages: list[dict[str, Any]], epoch: int | None, now: datetime) -> dict[str, list[str]]:
    """Each message as `live` (current epoch, slot not yet overdue), `duplicate` (a live slot seen before),
    `stale` (older epoch) or `overdue` (current epoch, slot more than 5 s past): slot times as strings."""
    out: dict[str, list[str]] = {"live": [], "duplicate": [], "stale": [], "overdue": []}
    for message in messages:
        slot = str(message.get("scheduled_for"))
        if epoch is not None and message.get("epoch") != epoch:
            out["stale"].append(slot)
        elif message.get("scheduled_for") and parse_time(slot) < now - OVERDUE_AFTER:
            out["overdue"].append(slot)
        elif slot in out["live"]:
            out["duplicate"].append(slot)
        else:
            out["live"].append(slot)
    return out
