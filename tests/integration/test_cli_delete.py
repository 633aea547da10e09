"""`delete JOB` end to end: the job is unregistered, its own queues go, its history stays readable."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.settings import Settings
from tests.integration.test_cli import YEARLY, cli_here
from tests.support.runtime import Control

pytestmark = pytest.mark.integration


async def test_delete_unregisters_the_job_and_a_second_delete_is_an_unknown_job(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="tick", queue="shared-q", cron_expr=YEARLY)
    await control.seed(job_id="tock", queue="shared-q", cron_expr=YEARLY)  # keeps the shared work queue known

    deleted = await cli_here(capsys, settings, cleanup_scope, "delete", "tick")
    assert deleted.code == 0 and "deleted 'tick'" in deleted.out
    assert await control.job("tick") is None and await control.job("tock") is not None
    channel = await amqp.channel()
    with pytest.raises(aio_pika.exceptions.ChannelClosed):
        await channel.declare_queue(topology.delay_queue_name(cleanup_scope, "tick"), passive=True)

    again = await cli_here(capsys, settings, cleanup_scope, "delete", "tick")
    assert again.code == 2 and again.error_line == f"error: unknown job 'tick' in scope {cleanup_scope!r}"
    status = await cli_here(capsys, settings, cleanup_scope, "status")
    assert "tock" in status.out and "tick " not in status.out
