"""Counting what a worker process asks of PostgreSQL and RabbitMQ, from inside the process.

PostgreSQL: every byte asyncpg writes to a server connection is parsed as frontend protocol messages. A round trip
is a message the client then waits on: `Sync` (ends an extended-protocol exchange: prepare, or bind + execute) or
`Query` (simple protocol). Statements are `Execute` messages plus the statements of each simple query.
RabbitMQ: publishes, deliveries, acks/nacks/rejects and synchronous RPCs (declare, purge, qos ...) per channel.

`install()` patches asyncpg and aiormq classes in this process only; the counts are read with `snapshot()`.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

COUNTS: Counter[str] = Counter()
_HEADER = struct.Struct("!cI")


class _WireCounter:
    """Parses one connection's outgoing frontend messages (type byte + int32 length) across write calls."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> None:
        buf = self.pending + data
        pos = 0
        while len(buf) - pos >= 5:
            kind, length = _HEADER.unpack_from(buf, pos)
            end = pos + 1 + length
            if end > len(buf):
                break
            if kind == b"S":
                COUNTS["pg_round_trips"] += 1
            elif kind == b"E":
                COUNTS["pg_statements"] += 1
            elif kind == b"Q":
                COUNTS["pg_round_trips"] += 1
                text = bytes(buf[pos + 5 : end - 1]).decode("utf-8", "replace")
                COUNTS["pg_statements"] += max(1, sum(1 for part in text.split(";") if part.strip()))
            elif kind == b"P":
                COUNTS["pg_prepares"] += 1
            pos = end
        self.pending = bytes(buf[pos:])


def _wrap_transport(transport: Any) -> None:
    wire = _WireCounter()
    write, writelines = transport.write, transport.writelines

    def counted_write(data: Any) -> None:
        wire.feed(bytes(data))
        write(data)

    def counted_writelines(buffers: Any) -> None:
        buffers = list(buffers)
        for data in buffers:
            wire.feed(bytes(data))
        writelines(buffers)

    try:
        transport.write = counted_write
        transport.writelines = counted_writelines
    except AttributeError:  # a transport written in C (uvloop): not counted
        COUNTS["pg_uncounted_connections"] += 1


def _install_postgres() -> None:
    from asyncpg.connection import Connection

    original = Connection.__init__

    def init(self: Any, protocol: Any, transport: Any, *args: Any, **kwargs: Any) -> None:
        original(self, protocol, transport, *args, **kwargs)
        COUNTS["pg_connections"] += 1
        _wrap_transport(transport)

    Connection.__init__ = init


def _count_method(cls: Any, name: str, key: str) -> None:
    original = getattr(cls, name)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS[key] += 1
        return await original(self, *args, **kwargs)

    setattr(cls, name, counted)


def _install_amqp() -> None:
    from aiormq.channel import Channel

    _count_method(Channel, "basic_publish", "amqp_publishes")
    _count_method(Channel, "basic_ack", "amqp_acks")
    _count_method(Channel, "basic_nack", "amqp_nacks")
    _count_method(Channel, "basic_reject", "amqp_rejects")
    _count_method(Channel, "_on_deliver_frame", "amqp_deliveries")
    _count_method(Channel, "rpc", "amqp_rpcs")


def install() -> None:
    """Patch asyncpg and aiormq in this process so every message to the servers is counted."""
    _install_postgres()
    _install_amqp()


def snapshot() -> dict[str, Any]:
    """The counts so far, with the wall clock and this process's CPU time (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "time": time.time(),
        "cpu_sec": usage.ru_utime + usage.ru_stime,
        "pid": os.getpid(),
        **dict(COUNTS),
    }


def append_snapshot(path: Path) -> None:
    with path.open("a") as out:
        out.write(json.dumps(snapshot()) + "\n")
