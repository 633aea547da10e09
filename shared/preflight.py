"""`python -m shared.preflight`: one line per server that does not answer, and how to start it (and one line for
SCHEDULER_EVENT_LOOP=uvloop without uvloop installed).

Exit code 0 when both answer (and the event loop asked for can be loaded), 1 otherwise. `make test` and
`make demo` run it first.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from shared import event_loop
from shared.brokers import parse_amqp_urls
from shared.failover import connect_any
from shared.settings import Settings

HOW_TO_START = {
    "RabbitMQ": "start it with `rabbitmq-server -detached` (or `make up` with Docker), or set AMQP_URL",
    "PostgreSQL": "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
    " (or `make up` with Docker), or set DATABASE_URL",
}


async def check_rabbitmq(url: str, wait_sec: float) -> str | None:
    try:
        connection = await asyncio.wait_for(connect_any(parse_amqp_urls(url), wait_sec), wait_sec)
    except Exception as exc:  # any failure is reported as one line
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    await connection.close()
    return None


async def check_postgres(dsn: str, wait_sec: float) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=wait_sec)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    await conn.close()
    return None


async def preflight(settings: Settings, wait_sec: float = 5.0) -> list[str]:
    """Problems found, one readable line each (empty when both servers answer)."""
    amqp, pg = await asyncio.gather(
        check_rabbitmq(settings.amqp_url.get_secret_value(), wait_sec),
        check_postgres(settings.database_url.get_secret_value(), wait_sec),
    )
    problems = []
    try:
        event_loop.choose(settings.scheduler_event_loop)
    except event_loop.EventLoopUnavailable as exc:
        problems.append(str(exc))
    if amqp is not None:
        problems.append(
            f"RabbitMQ at {settings.amqp_url_redacted} is not reachable ({amqp}); {HOW_TO_START['RabbitMQ']}"
        )
    if pg is not None:
        problems.append(
            f"PostgreSQL at {settings.database_url_redacted} is not reachable ({pg}); {HOW_TO_START['PostgreSQL']}"
        )
    return problems


def main() -> int:
    problems = asyncio.run(preflight(Settings()))
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("RabbitMQ and PostgreSQL answer.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
