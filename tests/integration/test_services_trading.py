"""The trading service in SERVICE_MODE=real against stand-in market data and broker servers, two replicas:
an order is placed at most once per (ticker, timeframe, candle, action), however often the candle is delivered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest

from services.candles import closed_candle_open
from shared.settings import Settings
from tests.support.runtime import Control
from tests.support.service_process import publish_manual, service_process, wait_for_process
from tests.support.standins import CRASH, FLAT, BrokerStandIn, MarketStandIn

pytestmark = pytest.mark.integration

# The 1h cycle at minute 1 of an hour shortly before now (manual runs of chosen candles; a recent time keeps the
# recorded lateness small): it trades the candle of the hour before.
CANDLE_CLOSE_PLUS_1 = datetime.now(UTC).replace(minute=1, second=0, microsecond=0) - timedelta(hours=3)
TRADING_JOBS = (
    {"job_id": "trading-cycle", "cron_expr": "1 * * * *", "default_params": {"tickers": ["005930"], "lookback": 5}},
    {"job_id": "position-management", "cron_expr": "1,16,31,46 * * * *"},
)


async def seed_trading(control: Control) -> None:
    # Real cadences (hourly / 15 min): the test drives the runs with manual messages for chosen candles.
    for job in TRADING_JOBS:
        await control.seed(**job, queue="trading", lock_group="trading", overlap="buffer_one", misfire_grace_sec=60)


async def finished(control: Control, run_ids: list[uuid.UUID]) -> bool:
    rows = {r["run_id"]: r for r in await control.runs()}
    return all(r in rows and rows[r]["finished_at"] is not None for r in run_ids)


def real_env(market: MarketStandIn, broker: BrokerStandIn) -> dict[str, str]:
    return {"MARKET_API_URL": market.url, "BROKER_API_URL": broker.url}


async def test_two_deliveries_of_one_candle_place_one_order(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_trading(control)
    with MarketStandIn() as market, BrokerStandIn() as broker:
        env = real_env(market, broker)
        with (
            service_process("trading", settings, scope, "real", **env) as one,
            service_process("trading", settings, scope, "real", **env) as two,
        ):
            first = await publish_manual(amqp, scope, "trading", "trading-cycle", scheduled_for=CANDLE_CLOSE_PLUS_1)
            await wait_for_process(one, lambda: finished(control, [first]), 60, "the first delivery's run")
            later = CANDLE_CLOSE_PLUS_1 + timedelta(minutes=20)  # same hour: the same closed candle
            again = [
                await publish_manual(amqp, scope, "trading", "trading-cycle", scheduled_for=when)
                for when in (CANDLE_CLOSE_PLUS_1, later)
            ]
            await wait_for_process(two, lambda: finished(control, again), 60, "the repeated deliveries' runs")
            next_hour = CANDLE_CLOSE_PLUS_1 + timedelta(hours=1)
            fresh = await publish_manual(amqp, scope, "trading", "trading-cycle", scheduled_for=next_hour)
            await wait_for_process(two, lambda: finished(control, [fresh]), 60, "the next candle's run")
            skipped = one.events("order.duplicate_skipped") + two.events("order.duplicate_skipped")
    rows = {r["run_id"]: r for r in await control.runs("trading-cycle")}
    assert [rows[r]["status"] for r in (first, *again, fresh)] == ["succeeded"] * 4
    candle = closed_candle_open(CANDLE_CLOSE_PLUS_1, "1h")
    keys = [o["client_order_id"] for o in broker.orders]
    assert keys == [f"005930-1h-{candle}-buy", f"005930-1h-{candle + 3600}-buy"], "one order per candle"
    assert [o["side"] for o in broker.orders] == ["buy", "buy"]
    assert len(skipped) == 2 and {e["key"] for e in skipped} == {f"005930-1h-{candle}-buy"}
    stored = await pool.fetch("SELECT key, run_id FROM scheduler.idempotency_keys WHERE scope = $1", scope)
    assert {r["key"]: r["run_id"] for r in stored} == {keys[0]: first, keys[1]: fresh}


async def test_position_management_sells_a_stopped_out_position_once(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_trading(control)
    at = CANDLE_CLOSE_PLUS_1 + timedelta(minutes=15)  # the :00-:15 candle just closed
    positions = [{"ticker": "000660", "qty": 3, "avg_price": 100.0}, {"ticker": "005930", "qty": 1, "avg_price": 100.0}]
    with (
        MarketStandIn(series={"000660": CRASH, "005930": FLAT}) as market,
        BrokerStandIn(positions=positions) as broker,
        service_process("trading", settings, scope, "real", **real_env(market, broker)) as proc,
    ):
        runs = [await publish_manual(amqp, scope, "trading", "position-management", scheduled_for=at) for _ in "ab"]
        await wait_for_process(proc, lambda: finished(control, runs), 60, "both position checks")
    assert [r["status"] for r in await control.runs("position-management")] == ["succeeded", "succeeded"]
    candle = closed_candle_open(at, "15m")
    assert broker.orders == [
        {"ticker": "000660", "side": "sell", "qty": 3, "client_order_id": f"000660-15m-{candle}-sell"}
    ]


async def test_a_candle_missing_from_the_market_data_fails_the_run_without_ordering(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await seed_trading(control)
    candle = closed_candle_open(CANDLE_CLOSE_PLUS_1, "1h")
    with (
        MarketStandIn(available_until=candle - 3600) as market,
        BrokerStandIn() as broker,
        service_process("trading", settings, scope, "real", **real_env(market, broker)) as proc,
    ):
        run = await publish_manual(amqp, scope, "trading", "trading-cycle", scheduled_for=CANDLE_CLOSE_PLUS_1)
        await wait_for_process(proc, lambda: finished(control, [run]), 60, "the run")
    (row,) = await control.runs("trading-cycle")
    assert row["status"] == "failed" and f"candle {candle} not in the market data yet" in row["error"]
    assert broker.orders == []
