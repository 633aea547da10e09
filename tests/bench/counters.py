"""Counting what a worker process asks of PostgreSQL and RabbitMQ, from inside the process.

PostgreSQL: every byte asyncpg writes to a server connection is parsed as frontend protocol messages. A round trip
is a message the client then waits on: `Sync` (ends an extended-protocol exchange: prepare, or bind + execute) or
`Query` (simple protocol). Statements are `Execute` messages plus the statements of each simple query.
RabbitMQ: publishes, deliveries, acks/nacks/rejects and synchronous RPCs (declare, purge, qos ...) per channel.

`install()` patches asyncpg and aiormq classes in this process only, at levels above the event loop: the counts are
the same on asyncio's loop and on uvloop's. They are read with `snapshot()`.
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
_LENGTH = struct.Struct("!I")


class _WireCounter:
    """Parses one connection's outgoing frontend messages (type byte + int32 length) across write calls. The first
    message on a connection, the StartupMessage, has no type byte (int32 length, then the protocol version)."""

    def __init__(self) -> None:
        self.pending = b""
        self.started = False

    def feed(self, data: bytes) -> None:
        buf = self.pending + data
        pos = 0
        if not self.started:
            if len(buf) < 4:
                self.pending = buf
                return
            pos = _LENGTH.unpack_from(buf, 0)[0]
            self.started = True
        while len(buf) - pos >= 5:
            kind, length = _HEADER.unpack_from(buf, pos)
            end = pos + 1 + length
            if end > len(buf):
                break
            _count(kind, buf, pos, end)
            pos = end
        self.pending = bytes(buf[pos:])


def _count(kind: bytes, buf: bytes, pos: int, end: int) -> None:
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


class _CountedTransport:
    """Stands between asyncpg's protocol and its transport: every write passes through the wire counter, everything
    else goes to the transport. A proxy, not a patch of the transport's methods, because uvloop's transports are
    C objects whose attributes cannot be replaced; asyncio's and uvloop's are counted the same way."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._wire = _WireCounter()

    def write(self, data: Any) -> None:
        self._wire.feed(bytes(data))
        self._transport.write(data)

    def writelines(self, buffers: Any) -> None:
        buffers = list(buffers)
        for data in buffers:
            self._wire.feed(bytes(data))
        self._transport.writelines(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _install_postgres() -> None:
    from asyncpg.protocol.protocol import BaseProtocol, Protocol

    # Protocol is a Python class over asyncpg's compiled BaseProtocol, so its connection_made can be replaced: the
    # protocol then writes through the counting proxy, on whichever loop made the transport.
    def connection_made(self: Any, transport: Any) -> None:
        COUNTS["pg_connections"] += 1
        BaseProtocol.connection_made(self, _CountedTransport(transport))

    Protocol.connection_made = connection_made


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
