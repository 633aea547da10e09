"""The daily pipeline in SERVICE_MODE=real: its two steps are real scripts run as child processes against
stand-in market data and LLM servers; step 2 runs only after step 1 succeeded (on_success), and a step past
its timeout is killed and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared.settings import Settings
from tests.support.runtime import Control
from tests.support.service_process import ServiceProcess, publish_manual, service_process, wait_for_process
from tests.support.standins import LlmStandIn, MarketStandIn

pytestmark = pytest.mark.integration

CASES = {"cases": [{"ticker": "005930", "title": "A breakout on volume", "summary": "It rose."}]}


async def seed_pipeline(control: Control, **step1_params: Any) -> None:
    await control.seed(
        job_id="daily-pipeline-cases",
        queue="daily-pipeline",
        reschedule_mode="none",
        default_params={"step": "generate_cases", "max_cases": 3},
        timeout_sec=60,
    )
    await control.seed(
        job_id="daily-pipeline-seed",
        queue="daily-pipeline",
        cron_expr="0 23 * * 0-4",  # 08:00 KST on weekdays, as in 002_acd719624cf61f24.txt; the test runs it by hand
        on_success=["daily-pipeline-cases"],
        default_params={"step": "seed_fresh_data", "tickers": ["005930", "000660"], "days": 5, **step1_params},
        timeout_sec=60,
    )


async def statuses(control: Control, job_id: str) -> list[str]:
    return [r["status"] for r in await control.runs(job_id)]


async def finished(control: Control, job_id: str) -> bool:
    return any(s not in {"claimed", "running"} for s in await statuses(control, job_id))


def start(settings: Settings, scope: str, market: str, llm: str, data_dir: Path) -> Any:
    env = {"MARKET_API_URL": market, "LLM_API_URL": llm, "PIPELINE_DATA_DIR": str(data_dir)}
    return service_process("daily_pipeline", settings, scope, "real", **env)


async def test_step_two_runs_after_step_one_and_both_scripts_write_their_files(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_pipeline(control)
    with MarketStandIn() as market, LlmStandIn(reply=CASES) as llm:
        with start(settings, scope, market.url, llm.url, tmp_path) as proc:
            step1 = await publish_manual(amqp, scope, "daily-pipeline", "daily-pipeline-seed")
            await wait_for_process(proc, lambda: finished(control, "daily-pipeline-cases"), 60, "step 2")
        prompts = llm.prompts()
    (seed_run,) = await control.runs("daily-pipeline-seed")
    (cases_run,) = await control.runs("daily-pipeline-cases")
    assert seed_run["run_id"] == step1 and seed_run["status"] == "succeeded"
    assert cases_run["status"] == "succeeded" and cases_run["trigger_source"] == "event"
    assert cases_run["upstream_run_id"] == step1 and cases_run["started_at"] >= seed_run["finished_at"]
    day = json.loads((tmp_path / "latest.json").read_text())["date"]
    market_data = json.loads((tmp_path / day / "market.json").read_text())
    assert sorted(market_data["candles"]) == ["000660", "005930"] and len(market_data["candles"]["005930"]) == 5
    assert json.loads((tmp_path / day / "cases.json").read_text()) == {"date": day, **CASES}
    assert len(prompts) == 1 and "005930: close 110" in prompts[0]
    assert _steps(proc) == ["seed_fresh_data", "generate_cases"]


def _steps(proc: ServiceProcess) -> list[str]:
    return [e["step"] for e in proc.events("pipeline.step_succeeded")]


async def test_a_failed_step_one_never_starts_step_two(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_pipeline(control)
    with LlmStandIn(reply=CASES) as llm:
        unreachable = "http://127.0.0.1:9"  # discard port: nothing listens
        with start(settings, scope, unreachable, llm.url, tmp_path) as proc:
            await publish_manual(amqp, scope, "daily-pipeline", "daily-pipeline-seed")
            await wait_for_process(proc, lambda: finished(control, "daily-pipeline-seed"), 60, "step 1")
            # give a (wrong) step 2 every chance to show up before looking
            await publish_manual(amqp, scope, "daily-pipeline", "daily-pipeline-seed")
            await wait_for_process(proc, lambda: _count(control, "daily-pipeline-seed", 2), 60, "second step 1")
        assert llm.requests == []
    (first, second) = await control.runs("daily-pipeline-seed")
    assert first["status"] == second["status"] == "failed"
    assert "market data API: GET" in first["error"] and "unreachable" in first["error"]
    assert await control.runs("daily-pipeline-cases") == []
    assert not (tmp_path / "latest.json").exists()


async def _count(control: Control, job_id: str, n: int) -> bool:
    return sum(s not in {"claimed", "running"} for s in await statuses(control, job_id)) >= n


async def test_a_step_past_its_timeout_is_killed_and_recorded(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_pipeline(control, timeout_sec=1.5)
    with (
        MarketStandIn(delay_sec=30) as market,
        LlmStandIn(reply=CASES) as llm,
        start(settings, scope, market.url, llm.url, tmp_path) as proc,
    ):
        await publish_manual(amqp, scope, "daily-pipeline", "daily-pipeline-seed")
        await wait_for_process(proc, lambda: finished(control, "daily-pipeline-seed"), 60, "step 1")
        (row,) = await control.runs("daily-pipeline-seed")
        started = proc.events("subprocess.started")
        survivors = processes_mentioning(str(tmp_path))
    assert survivors == [], "the step's process group must be gone"
    assert row["status"] == "failed" and "seed_fresh_data ran past 1.5 s" in row["error"]
    assert row["duration_ms"] < 30_000, "the step was not waited for"
    assert [e["argv"][2] for e in started] == ["services.daily_pipeline.scripts.seed_fresh_data"]
    assert await control.runs("daily-pipeline-cases") == []


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the step scripts get the test's data dir as an argument)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found
