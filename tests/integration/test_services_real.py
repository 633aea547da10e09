"""The other services in SERVICE_MODE=real, each a real process against a stand-in of its outside system:
buy scanner (market data), news crawler (feed), scout (LLM), price monitor (subscriptions), maintenance
(prunes the scope's history); and a real service without its outside system configured says so in one line."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest

from services.candles import closed_candle_open
from shared.settings import Settings
from tests.support.runtime import Control
from tests.support.service_process import publish_manual, service_process, wait_for_process
from tests.support.standins import BREAKOUT, CRASH, FLAT, LlmStandIn, MarketStandIn, NewsStandIn, rss

pytestmark = pytest.mark.integration


async def count(control: Control, job_id: str, status: str = "succeeded") -> int:
    return sum(r["status"] == status for r in await control.runs(job_id))


async def done(control: Control, run_ids: list[uuid.UUID]) -> bool:
    rows = {r["run_id"]: r for r in await control.runs()}
    return all(r in rows and rows[r]["finished_at"] is not None for r in run_ids)


async def test_buy_scanner_scores_the_universe_on_the_candle_that_just_closed(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(
        job_id="buy-scanner",
        interval_seconds=1,
        default_params={"universe": "kospi200", "timeframe": "1h", "lookback": 5},
    )
    series = {"005930": BREAKOUT, "000660": FLAT, "035420": CRASH}
    with (
        MarketStandIn(series=series) as market,
        service_process("buy_scanner", settings, scope, "real", MARKET_API_URL=market.url) as proc,
    ):
        await wait_for_process(proc, lambda: _at_least(control, "buy-scanner", 2), 60, "2 scans")
        candidates = proc.events("scan.candidate")
        finished = proc.events("scan.finished")
        candle_requests = market.calls("GET", "/candles")
    runs = [r for r in await control.runs("buy-scanner") if r["status"] == "succeeded"]
    assert {c["ticker"] for c in candidates} == {"005930"} and all(c["rank"] == 1 for c in candidates)
    assert all(f["scanned"] == 3 and f["failed"] == 0 for f in finished)
    expected_ends = {str(closed_candle_open(r["scheduled_for"], "1h")) for r in runs}
    assert expected_ends <= {r.query["end"] for r in candle_requests}
    assert {r.query["ticker"] for r in candle_requests} == set(series)


async def _at_least(control: Control, job_id: str, n: int) -> bool:
    return await count(control, job_id) >= n


async def test_news_crawler_reports_each_article_once_across_fetches(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="news-crawler", interval_seconds=1)
    first = [("a1", "Chips rally", "https://n.example/1"), ("a2", "Rates hold", "https://n.example/2")]
    with (
        NewsStandIn(body=rss(first)) as feed,
        service_process("news_crawler", settings, scope, "real", NEWS_FEED_URL=feed.url) as proc,
    ):
        await wait_for_process(proc, lambda: _at_least(control, "news-crawler", 2), 60, "2 crawls")
        feed.body = rss([*first, ("a3", "Won firms", "https://n.example/3")])
        fetched_before = len(feed.requests)
        await wait_for_process(proc, lambda: _fetched_after(feed, fetched_before + 2), 60, "2 more crawls")
        await wait_for_process(proc, lambda: _logged(proc, "news.article", 3), 30, "the third article")
        articles = proc.events("news.article")
    assert [a["title"] for a in articles] == ["Chips rally", "Rates hold", "Won firms"]
    keys = await pool.fetchval("SELECT count(*) FROM scheduler.idempotency_keys WHERE scope = $1", scope)
    assert keys == 3


async def _fetched_after(feed: NewsStandIn, n: int) -> bool:
    return len(feed.requests) >= n


async def _logged(proc: object, event: str, n: int) -> bool:
    return len(proc.events(event)) >= n  # type: ignore[attr-defined]


async def test_scout_asks_the_model_and_rejects_an_answer_that_is_not_the_watchlist(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(
        job_id="scout-daily", queue="scout", cron_expr="0 8 * * 1-5", timezone="Asia/Seoul",
        default_params={"tickers": ["005930", "000660"], "max_picks": 2},
    )  # fmt: skip
    with (
        LlmStandIn() as llm,
        service_process("scout", settings, scope, "real", LLM_API_URL=llm.url, LLM_API_KEY="sk-test") as proc,
    ):
        good = await publish_manual(amqp, scope, "scout", "scout-daily")
        await wait_for_process(proc, lambda: done(control, [good]), 60, "the scout run")
        llm.reply = "I think Samsung looks good."
        bad = await publish_manual(amqp, scope, "scout", "scout-daily")
        await wait_for_process(proc, lambda: done(control, [good, bad]), 60, "the second scout run")
        picks = proc.events("scout.pick")
        calls = llm.calls("POST", "/chat/completions")
    rows = {r["run_id"]: r for r in await control.runs("scout-daily")}
    assert rows[good]["status"] == "succeeded" and [p["ticker"] for p in picks] == ["005930"]
    assert rows[bad]["status"] == "failed" and "the completion is not JSON" in rows[bad]["error"]
    assert "among 005930, 000660" in calls[0].body["messages"][-1]["content"]


async def test_price_monitor_starts_and_stops_the_subscription_and_refuses_other_actions(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id, action, cron in (
        ("price-monitor-start", "start", "0 9 * * 1-5"),
        ("price-monitor-stop", "stop", "30 15 * * 1-5"),
    ):
        await control.seed(
            job_id=job_id, queue="price-monitor", cron_expr=cron, timezone="Asia/Seoul",
            default_params={"action": action},
        )  # fmt: skip
    subscriber = f"{scope}-price-monitor"
    with (
        MarketStandIn() as market,
        service_process("price_monitor", settings, scope, "real", MARKET_API_URL=market.url) as proc,
    ):
        start = await publish_manual(amqp, scope, "price-monitor", "price-monitor-start")
        await wait_for_process(proc, lambda: done(control, [start]), 60, "start")
        subscribed = set(market.subscribed[subscriber])
        stop = await publish_manual(amqp, scope, "price-monitor", "price-monitor-stop")
        await wait_for_process(proc, lambda: done(control, [stop]), 60, "stop")
        bad = await publish_manual(amqp, scope, "price-monitor", "price-monitor-start", params={"action": "pause"})
        await wait_for_process(proc, lambda: done(control, [bad]), 60, "the bad action")
        transitions = [(e["from"], e["to"]) for e in proc.events("price_monitor.transition")]
    rows = {r["run_id"]: r for r in await control.runs()}
    assert subscribed == {"005930", "000660", "035420"} and market.subscribed[subscriber] == set()
    assert transitions == [("unknown", "running"), ("running", "stopped")]
    assert (
        rows[bad]["status"] == "failed" and "action" in rows[bad]["error"] and "'start' or 'stop'" in rows[bad]["error"]
    )


async def test_maintenance_prunes_old_runs_and_expired_keys_of_its_scope_only(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    other = f"{scope}x"
    control = Control(pool, amqp, scope)
    await control.seed(job_id="maintenance", cron_expr="17 3 * * *", timezone="Asia/Seoul")
    # The watchdog prunes too (runs past RUN_RETENTION_DAYS, expired keys): give it a long retention, so the
    # 10-day-old run can only go by the maintenance job's own 5-day retention.
    try:
        with service_process("maintenance", settings, scope, "real", RUN_RETENTION_DAYS="60") as proc:
            old, recent, foreign = await plant_history(pool, scope, other)
            run = await publish_manual(amqp, scope, "maintenance", "maintenance", params={"retention_days": 5})
            await wait_for_process(proc, lambda: done(control, [run]), 60, "the maintenance run")
            (pruned,) = proc.events("maintenance.pruned")
        both = [scope, other]
        left = {
            r["run_id"] for r in await pool.fetch("SELECT run_id FROM scheduler.job_runs WHERE scope = ANY($1)", both)
        }
        keys = {
            r["key"] for r in await pool.fetch("SELECT key FROM scheduler.idempotency_keys WHERE scope = ANY($1)", both)
        }
    finally:
        await pool.execute("DELETE FROM scheduler.job_runs WHERE scope = $1", other)
        await pool.execute("DELETE FROM scheduler.idempotency_keys WHERE scope = $1", other)
    assert pruned["runs"] == 1 and pruned["retention_days"] == 5
    assert old not in left and {recent, foreign, run} <= left
    assert keys == {"live-key", "foreign-expired-key"}


async def plant_history(pool: asyncpg.Pool, scope: str, other: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A run finished 10 days ago and one 2 days ago in `scope`, an old one in `other`; keys likewise."""
    now = datetime.now(UTC)
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    for run_id, run_scope, age in ((ids[0], scope, 10), (ids[1], scope, 2), (ids[2], other, 10)):
        finished = now - timedelta(days=age)
        await pool.execute(
            "INSERT INTO scheduler.job_runs (run_id, scope, job_id, trigger_source, scheduled_for, status,"
            " started_at, finished_at) VALUES ($1, $2, 'maintenance', 'scheduler', $3, 'succeeded', $3, $3)",
            run_id, run_scope, finished,
        )  # fmt: skip
    for key_scope, key, expires in (
        (scope, "expired-key", now - timedelta(hours=1)),
        (scope, "live-key", now + timedelta(days=1)),
        (other, "foreign-expired-key", now - timedelta(hours=1)),
    ):
        await pool.execute(
            "INSERT INTO scheduler.idempotency_keys (scope, key, expires_at) VALUES ($1, $2, $3)",
            key_scope,
            key,
            expires,
        )
    return ids


async def test_a_real_service_without_its_outside_system_exits_with_one_clear_line(
    settings: Settings, cleanup_scope: str
) -> None:
    with service_process("buy_scanner", settings, cleanup_scope, "real") as proc:
        code = await asyncio.to_thread(proc.wait_exit, 60)
        output = proc.output()
    assert code == 2
    assert (
        output.strip().splitlines()[-1] == "error: buy_scanner: SERVICE_MODE=real needs MARKET_API_URL (unset or empty)"
    )
    assert "Traceback" not in output
