"""The Telegram bot against a local stand-in of the Bot API and the real RabbitMQ and PostgreSQL: every command
acts through the control layer on seeded jobs, only the allowed chats are answered, alerts reach every allowed
chat, the token never reaches a log, and polling outlives an API that fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from scheduler_seed.server import telegram
from scheduler_seed.server.telegram import TelegramBot, TelegramSettings
from shared.control import Control
from shared.settings import Settings
from tests.support.logcapture import capture_logs
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import fast_settings, running_worker, wait_until
from tests.support.telegram_standin import TOKEN, TelegramStandIn

pytestmark = pytest.mark.integration

ALICE = 4242  # a private chat that is allowed
OPS_GROUP = -100777  # a group that is allowed
STRANGER = 999  # anybody else
YEARLY = "0 0 1 1 *"  # a chain that never fires during a test


@pytest.fixture
def standin() -> Iterator[TelegramStandIn]:
    with TelegramStandIn() as api:
        yield api


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The bot's structlog lines (the module's logger is swapped for one that reaches the capture)."""
    with capture_logs() as entries:
        monkeypatch.setattr(telegram, "log", structlog.get_logger("scheduler_seed.server.telegram"))
        yield entries


def make_bot(settings: Settings, scope: str, standin: TelegramStandIn) -> TelegramBot:
    config = TelegramSettings(
        bot_token=SecretStr(TOKEN),
        allowed_chats=f"{ALICE},{OPS_GROUP}",
        api_url=standin.url,
        poll_timeout_sec=1,
    )
    bot = telegram.from_env(fast_settings(settings, scope), scope, telegram=config)
    assert bot is not None
    return bot


@pytest.fixture
async def bot(
    settings: Settings, cleanup_scope: str, standin: TelegramStandIn, logs: list[MutableMapping[str, Any]]
) -> AsyncIterator[TelegramBot]:
    started = make_bot(settings, cleanup_scope, standin)
    await started.start()
    await standin.wait_for("getUpdates")
    yield started
    await started.stop()


@pytest.fixture
async def control(settings: Settings, cleanup_scope: str) -> AsyncIterator[Control]:
    async with Control(settings, cleanup_scope, actor="test") as opened:
        yield opened


# -- commands ---------------------------------------------------------------------------------------------------


async def test_status_shows_every_job_enabled_schedule_last_status_and_failures(
    bot: TelegramBot, standin: TelegramStandIn, control: Control
) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600})
    await control.put({"job_id": "nightly", "cron_expr": YEARLY, "timezone": "Asia/Seoul"})
    await control.pause("nightly", note="broker maintenance")

    (answer,) = await standin.ask(ALICE, "/job status")

    lines = answer.splitlines()
    assert lines[0] == "2 job(s), times in UTC:"
    nightly, tick = lines[1:]
    assert nightly.startswith("nightly: PAUSED (broker maintenance), cron '0 0 1 1 *' in Asia/Seoul, never run")
    assert tick.startswith("tick: on, every 1 h") and "never run" in tick and ", next " in tick
    assert "failure" not in tick and "running" not in tick


async def test_pause_really_pauses_in_postgresql_and_the_audit_names_the_chat(
    bot: TelegramBot, standin: TelegramStandIn, control: Control
) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600})

    (paused,) = await standin.ask(ALICE, "/job pause tick broker maintenance tonight")
    assert paused == "tick paused: its chain has ended; a run in progress finishes. Note: broker maintenance tonight"
    row = await control.job("tick")
    assert not row.enabled and row.pause_note == "broker maintenance tonight"

    (resumed,) = await standin.ask(OPS_GROUP, "/job@scheduler_test_bot resume tick")
    assert resumed.startswith("tick resumed with a fresh chain. First slot ")
    assert (await control.job("tick")).enabled

    audit = await control.audit(job_id="tick")
    assert [(a.action, a.actor, a.note) for a in audit[:2]] == [
        ("resume", f"telegram:{OPS_GROUP}", None),
        ("pause", f"telegram:{ALICE}", "broker maintenance tonight"),
    ]
    assert audit[1].before == {"enabled": True, "pause_note": None}
    assert audit[1].after == {"enabled": False, "pause_note": "broker maintenance tonight"}


async def test_a_timed_pause_from_a_chat_sets_when_the_job_resumes_in_its_own_zone(
    bot: TelegramBot, standin: TelegramStandIn, control: Control
) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600, "timezone": "Asia/Seoul"})
    (paused,) = await standin.ask(ALICE, "/job pause tick until 2099-01-02T09:00 market closed")
    assert paused == (
        "tick paused: its chain has ended; a run in progress finishes. It resumes by itself at 2099-01-02 00:00:00Z."
        " Note: market closed"
    )
    row = await control.job("tick")
    assert not row.enabled and row.pause_note == "market closed"
    assert row.paused_until == datetime(2099, 1, 2, 0, 0, tzinfo=UTC)  # 09:00 in Seoul

    (past,) = await standin.ask(ALICE, "/job pause tick until 2000-01-01T00:00")
    assert "must be in the future" in past
    (ahead,) = await standin.ask(ALICE, "/job pause tick until 90m")
    assert "It resumes by itself at" in ahead
    remaining = (await control.job("tick")).paused_until - datetime.now(UTC)
    assert timedelta(minutes=89) < remaining <= timedelta(minutes=90)


async def test_run_queues_a_run_a_worker_makes_and_a_running_job_is_answered_with_its_run(
    bot: TelegramBot, standin: TelegramStandIn, control: Control, settings: Settings
) -> None:
    await control.put({"job_id": "slow", "cron_expr": YEARLY, "max_attempts": 1, "default_params": {"sleep_sec": 3}})
    async with running_worker(fast_settings(settings, control.scope), {"slow": (probe, ProbeParams)}):
        (queued,) = await standin.ask(ALICE, "/job run slow")
        assert queued.startswith("Run ") and queued.endswith(" of slow queued.")
        run_id = queued.split()[1]

        async def running() -> bool:
            return any(str(r.run_id) == run_id and r.status == "running" for r in await control.runs("slow"))

        await wait_until(running, 15, "the run the bot queued to start")
        (busy,) = await standin.ask(ALICE, "/job run slow")
        assert busy.startswith(f"slow is running now: run {run_id} (running on ")
        assert ", started 20" in busy and busy.endswith("Nothing was queued.")

        async def finished() -> bool:
            return [r.status for r in await control.runs("slow")] == ["succeeded"]

        await wait_until(finished, 20, "the run to succeed, and no second run")

    (runs,) = await standin.ask(ALICE, "/job runs slow")
    header, line = runs.splitlines()
    assert header == "Latest 1 run(s) of slow, times in UTC:"
    assert " succeeded in 3." in line and "manual #1" in line and f"run {run_id[:8]}" in line
    assert [a.actor for a in await control.audit(job_id="slow") if a.action == "run-now"] == [f"telegram:{ALICE}"]


async def test_unknown_jobs_and_commands_get_a_plain_answer_and_change_nothing(
    bot: TelegramBot, standin: TelegramStandIn, control: Control
) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600})
    audit_before = len(await control.audit())

    assert await standin.ask(ALICE, "/job pause ghost") == ["Unknown job 'ghost'. /job status lists the jobs."]
    assert await standin.ask(ALICE, "/job runs ghost") == ["Unknown job 'ghost'. /job status lists the jobs."]
    (unknown_verb,) = await standin.ask(ALICE, "/job frobnicate tick")
    assert unknown_verb.startswith("Unknown command /job frobnicate.\nCommands:")
    (unknown_command,) = await standin.ask(ALICE, "/deploy now")
    assert unknown_command.startswith("Unknown command /deploy.")
    (bad_id,) = await standin.ask(ALICE, "/job run Tick.Two")
    assert bad_id.startswith("'Tick.Two' is not a job id")
    (no_id,) = await standin.ask(ALICE, "/job resume")
    assert no_id.startswith("/job resume needs a job id.")
    (usage,) = await standin.ask(ALICE, "/job")
    assert "/job pause <id> [until 2h|ISO time] [note]" in usage

    assert (await control.job("tick")).enabled
    assert len(await control.audit()) == audit_before


async def test_a_chat_not_allowed_gets_no_answer_and_the_refusal_is_logged_with_its_id(
    bot: TelegramBot, standin: TelegramStandIn, control: Control, logs: list[MutableMapping[str, Any]]
) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600})

    update = standin.say(STRANGER, "/job pause tick")

    def refused() -> bool:
        return any(e["event"] == "telegram.refused" and e.get("chat_id") == STRANGER for e in logs)

    async def handled() -> bool:
        return standin.confirmed(update) and refused()

    await wait_until(handled, 15, "the stranger's message to be fetched and refused")
    await standin.ask(ALICE, "/job status")  # a later command answered: the stranger's turn is long over
    assert standin.sent(STRANGER) == []
    assert (await control.job("tick")).enabled
    assert [a.action for a in await control.audit(job_id="tick")] == ["create"]


async def test_a_server_that_is_down_is_answered_plainly(
    settings: Settings, scope: str, standin: TelegramStandIn
) -> None:
    broken = settings.model_copy(update={"database_url": SecretStr("postgresql://postgres:s3cret@127.0.0.1:1/x")})
    down = make_bot(broken, scope, standin)
    await down.start()
    try:
        (answer,) = await standin.ask(ALICE, "/job status")
    finally:
        await down.stop()
    assert answer == "PostgreSQL is not reachable now; nothing was done. Try again in a while."


# -- alerts -----------------------------------------------------------------------------------------------------


async def test_notify_delivers_to_every_allowed_chat_within_the_message_limit(
    settings: Settings, scope: str, standin: TelegramStandIn
) -> None:
    bot = make_bot(settings, scope, standin)  # notify needs no polling
    try:
        await bot.notify("FIRING ChainLost job=tick scope=mock\nRESOLVED WorkerDown service=buy_scanner")
        long_alerts = "\n".join(f"FIRING JobFailing job=job-{i:04d} failures=3 in a row" for i in range(300))
        await bot.notify(long_alerts)
    finally:
        await bot.stop()

    for chat in (ALICE, OPS_GROUP):
        first, *rest = [m.text for m in standin.sent(chat)]
        assert first == "FIRING ChainLost job=tick scope=mock\nRESOLVED WorkerDown service=buy_scanner"
        assert len(rest) > 1 and all(len(text) <= 4096 for text in rest)  # split, none refused as too long
        assert "\n".join(rest) == long_alerts
    assert standin.sent(STRANGER) == []


# -- failures of the Bot API, and the token --------------------------------------------------------------------


async def test_polling_outlives_api_errors_with_back_off_and_the_token_never_reaches_a_log(
    settings: Settings,
    cleanup_scope: str,
    standin: TelegramStandIn,
    logs: list[MutableMapping[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    standin.fail_next("getMe", status=502)  # down when the bot starts
    bot = make_bot(settings, cleanup_scope, standin)
    await bot.start()
    try:
        await standin.wait_for("getUpdates")
        assert any(e["event"] == "telegram.polling_retrying" and "Bad Gateway" in e["error"] for e in logs)

        standin.fail_next("getUpdates", status=502)  # down for a moment while polling
        polls = len(standin.called("getUpdates"))
        await standin.wait_for("getUpdates", polls + 2)  # the failed one, then polling again
        failed, again = standin.called("getUpdates")[polls : polls + 2]
        assert again.at - failed.at >= 0.3  # backed off, not a hot loop
        assert any("Failed to fetch updates" in r.getMessage() for r in caplog.records)

        (answer,) = await standin.ask(ALICE, "/job status")
        assert answer == "No jobs in this scope."
        standin.say(STRANGER, "/job status")  # refused: its chat id is logged, nothing else
        await bot.notify("FIRING test alert")
    finally:
        await bot.stop()

    assert logs and caplog.records
    secret = TOKEN.partition(":")[2]
    for entry in logs:
        assert secret not in repr(entry)
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert secret not in caplog.text
    assert secret not in repr(bot)


async def test_stop_ends_the_polling_task_and_a_second_start_polls_again(
    settings: Settings, scope: str, standin: TelegramStandIn
) -> None:
    bot = make_bot(settings, scope, standin)
    await bot.start()
    await standin.wait_for("getUpdates")
    await asyncio.wait_for(bot.stop(), 10)
    calls = len(standin.called("getUpdates"))
    await asyncio.sleep(1.5)  # longer than one long poll: nothing polls any more
    assert len(standin.called("getUpdates")) == calls
    await bot.start()
    try:
        assert await standin.ask(ALICE, "/help") != []
    finally:
        await bot.stop()
