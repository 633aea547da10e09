"""The trading cycle (job `trading-cycle`, at minute 1 of every hour): for each ticker, the candle that just
closed decides buy / sell / hold; orders go through `place_once`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.candles import Signal, breakout_signal, closed_candle_open, through_closed, timeframe_seconds
from services.clients.broker import Broker, HttpBroker, Side
from services.clients.config import ClientConfig
from services.clients.market import HttpMarketData, MarketData
from services.trading.orders import DEFAULT_KEY_TTL_SEC, place_once
from shared.context import RunContext
from shared.errors import SchedulerError
from shared.registry import HandlerFn
from shared.settings import Settings


class CycleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tickers: list[str] = Field(min_length=1, max_length=200)
    timeframe: str = "1h"
    lookback: int = Field(default=20, ge=1, le=500)
    order_qty: float = Field(default=1, gt=0)
    key_ttl_sec: float = Field(default=DEFAULT_KEY_TTL_SEC, gt=0)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value


class CycleIncomplete(SchedulerError):
    """Some tickers could not be handled; the others were. A retry redoes only what is missing (the keys
    of orders already placed make them skip)."""


def decide(signal: Signal, holding: bool) -> Signal:
    """Buy only what is not held, sell only what is."""
    if signal is Signal.BUY and not holding:
        return Signal.BUY
    if signal is Signal.SELL and holding:
        return Signal.SELL
    return Signal.HOLD


async def run_cycle(ctx: RunContext, params: CycleParams, market: MarketData, broker: Broker) -> int:
    """Orders placed by this run."""
    candle_ts = closed_candle_open(ctx.scheduled_for, params.timeframe)
    held = {p.ticker: p for p in await broker.positions() if p.qty > 0}
    placed, problems = 0, []
    for ticker in params.tickers:
        try:
            candles = await market.candles(ticker, params.timeframe, candle_ts, params.lookback + 1)
            signal = breakout_signal(through_closed(candles, candle_ts, ticker), params.lookback)
            action = decide(signal, holding=ticker in held)
            ctx.log.info("trading.signal", ticker=ticker, candle_ts=candle_ts, action=action.value)
            if action is Signal.HOLD:
                continue
            side: Side = "buy" if action is Signal.BUY else "sell"
            qty = held[ticker].qty if side == "sell" else params.order_qty
            order = await place_once(
                ctx, broker, ticker=ticker, timeframe=params.timeframe, candle_ts=candle_ts, side=side,
                qty=qty, reason="breakout", key_ttl_sec=params.key_ttl_sec,
            )  # fmt: skip
            placed += order is not None
        except SchedulerError as exc:
            problems.append(f"{ticker}: {exc}")
    ctx.log.info("trading.cycle_finished", candle_ts=candle_ts, orders=placed, problems=len(problems))
    if problems:
        raise CycleIncomplete("; ".join(problems)[:1000])
    return placed


def build_cycle(config: ClientConfig, settings: Settings) -> HandlerFn:
    market, broker = HttpMarketData.from_config(config), HttpBroker.from_config(config)

    async def handle(ctx: RunContext, params: CycleParams) -> None:
        await run_cycle(ctx, params, market, broker)

    return handle
