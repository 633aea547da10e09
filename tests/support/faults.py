"""Fault injection aimed at one scope's workers only, so other suites (or a live demo) are not disturbed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess

import asyncpg


def close_rabbitmq_connections(name_part: str) -> int:
    """Close every broker connection whose client-provided name contains `name_part` (rabbitmqctl). Listed in the
    table format: its pids (`<rabbit@host.1.2.3>`) are what `close_connection` takes; the JSON formatter's
    (`#PID<1.2.3>`) are refused with `invalid_pid_syntax`."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    closed = 0
    for line in out.splitlines():
        pid, _, properties = line.partition("\t")
        name = re.search(r'\{"connection_name","([^"]*)"\}', properties)
        if pid.startswith("<") and name and name_part in name.group(1):
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "fault injected by test"],
                capture_output=True,
                check=True,
                timeout=60,
            )
            closed += 1
    return closed


async def terminate_backends(pool: asyncpg.Pool, name_part: str) -> int:
    """pg_terminate_backend on every session whose application_name contains `name_part`."""
    rows = await pool.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '%' || $1 || '%'"
        " AND pid <> pg_backend_pid()",
        name_part,
    )
    return len(rows)


async def database_outage(pool: asyncpg.Pool, name_part: str, seconds: float) -> int:
    """Keep terminating the matching sessions for `seconds`: to those workers PostgreSQL is gone meanwhile."""
    killed = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        with contextlib.suppress(Exception):
            killed += await terminate_backends(pool, name_part)
        await asyncio.sleep(0.05)
    return killed


class TcpForwarder:
    """A port that forwards to RabbitMQ only once started: lets a worker start before its broker 'exists'."""

    def __init__(self, listen_port: int, target_host: str, target_port: int) -> None:
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones (both ends see the socket close)."""
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()
