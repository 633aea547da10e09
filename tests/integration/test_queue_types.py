"""Queue types end to end on the real broker: a worker on quorum queues, a scope default with a per-job override,
disagreeing jobs refused, and a worker facing a work queue of the other type."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.control.errors import InvalidDefinition
from shared.settings import Settings
from tests.support.probe import ProbeParams, probe
from tests.support.queues import declared_as
from tests.support.runtime import (
    Control,
    fast_settings,
    running_worker,
    slots_run_more_than_once,
    spawn_worker,
    stop_process,
    wait_until,
)  # fmt: skip

pytestmark = pytest.mark.integration


async def _exists(amqp: aio_pika.abc.AbstractRobustConnection, name: str) -> bool:
    channel = await amqp.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def _succeeded(control: Control, job_id: str, at_least: int) -> bool:
    return sum(1 for r in await control.runs(job_id) if r["status"] == "succeeded") >= at_least


async def test_worker_runs_a_quorum_job_through_its_chain_and_retry_queue(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(
        job_id="q", interval_seconds=1, queue_type="quorum", max_attempts=2, retry_backoff_sec=0.2,
        default_params={"fail_until_attempt": 1},
    )  # fmt: skip
    retry_queue = topology.retry_queue_name(scope, "q")
    assert not await _exists(amqp, retry_queue)  # declared on the first retry
    async with running_worker(fast_settings(settings, scope), {"q": (probe, ProbeParams)}):
        await wait_until(lambda: _succeeded(control, "q", 3), 30, "3 slots succeeded on their retry")
    rows = await control.runs("q")
    succeeded = [r for r in rows if r["status"] == "succeeded"]
    assert {r["attempt"] for r in succeeded} == {2}  # every success went through the retry queue
    assert {r["trigger_source"] for r in succeeded} == {"retry"}
    assert slots_run_more_than_once(rows) == []
    assert await _exists(amqp, retry_queue)
    for spec in (
        topology.work_queue_spec(scope, "q", "quorum"),
        topology.delay_queue_spec(scope, "q", "q", "quorum"),
        topology.retry_queue_spec(scope, "q", "q", "quorum"),
    ):
        assert await declared_as(amqp, spec), spec.name


async def test_scope_default_with_a_per_job_override(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scope = cleanup_scope
    monkeypatch.setenv("SCHEDULER_QUEUE_TYPE", "quorum")
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(
        '[jobs.dflt]\ninterval_seconds = 1\n\n[jobs.dflt2]\nqueue = "dflt"\ninterval_seconds = 1\n\n'
        '[jobs.own]\ninterval_seconds = 1\nqueue_type = "classic"\n'
    )
    control = Control(pool, amqp, scope)
    async with control.control() as c:
        await c.seed_file(jobs_file)
    assert {(await control.job(j))["queue_type"] for j in ("dflt", "dflt2")} == {"quorum"}
    assert (await control.job("own"))["queue_type"] == "classic"
    worker_settings = fast_settings(settings, scope, scheduler_queue_type="quorum")
    handlers = {"dflt": (probe, ProbeParams), "own": (probe, ProbeParams)}
    async with running_worker(worker_settings, handlers):
        for job_id in ("dflt", "dflt2", "own"):
            await wait_until(lambda j=job_id: _succeeded(control, j, 2), 20, f"2 runs of {job_id}")  # type: ignore[misc]
    assert await declared_as(amqp, topology.work_queue_spec(scope, "dflt", "quorum"))
    assert await declared_as(amqp, topology.delay_queue_spec(scope, "dflt2", "dflt", "quorum"))
    assert await declared_as(amqp, topology.dead_queue_spec(scope, "quorum"))  # the scope's type, from Settings
    assert await declared_as(amqp, topology.work_queue_spec(scope, "own", "classic"))
    assert await declared_as(amqp, topology.delay_queue_spec(scope, "own", "own", "classic"))
    assert not await _exists(amqp, topology.retry_queue_name(scope, "own"))  # no retry yet: no retry queue


async def test_jobs_of_one_work_queue_that_disagree_are_refused_naming_them(
    pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str, tmp_path: Path
) -> None:
    scope = cleanup_scope
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(
        '[jobs.a]\nqueue = "shared"\ninterval_seconds = 60\nqueue_type = "quorum"\n\n'
        '[jobs.b]\nqueue = "shared"\ninterval_seconds = 60\nqueue_type = "classic"\n'
    )
    control = Control(pool, amqp, scope)
    async with control.control() as c:
        with pytest.raises(InvalidDefinition) as refused:
            await c.seed_file(jobs_file)
    text = str(refused.value)
    assert "work queue 'shared'" in text and "classic: 'b'" in text and "quorum: 'a'" in text
    assert await control.job("a") is None and await control.job("b") is None  # nothing written

    await control.seed(job_id="c", queue="shared", interval_seconds=60, queue_type="quorum")
    with pytest.raises(InvalidDefinition, match=r"classic: 'd'; quorum: 'c'"):
        await control.seed(job_id="d", queue="shared", interval_seconds=60, queue_type="classic")
    await control.seed(job_id="e", queue="shared", interval_seconds=60)  # no type: takes its work queue's
    assert (await control.job("e"))["queue_type"] == "quorum"
    with pytest.raises(InvalidDefinition, match=r"migrate-queues --scope .* --to classic --queue shared"):
        await control.change("c", queue_type="classic")


async def test_worker_facing_a_queue_of_the_other_type_names_it_and_the_fix(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="w", interval_seconds=60)  # classic
    channel = await amqp.channel()
    await channel.queue_delete(topology.work_queue_name(scope, "w"))
    await topology.declare_work_queue(channel, scope, "w", "quorum")
    await channel.close()
    proc = spawn_worker(scope, ["w"], settings)
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        stop_process(proc)
    output = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert code == 2 and "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
    assert f"queue '{scope}.jobs.w' exists as a quorum queue but its jobs declare classic" in line
    assert f"migrate-queues --scope {scope} --to classic" in line
