"""Position management (job `position-management`, minutes 1, 16, 31, 46): close a held position whose last
closed 15-minute candle crossed its stop-loss or take-profit level."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.candles import closed_candle_open, exit_reason, through_closed, timeframe_seconds
from services.clients.broker import Broker, HttpBroker
from services.clients.config import ClientConfig
from services.clients.market import HttpMarketData, MarketData
from services.trading.cycle import CycleIncomplete
from services.trading.orders import DEFAULT_KEY_TTL_SEC, place_once
from shared.context import RunContext
from shared.errors import SchedulerError
from shared.registry import HandlerFn
from shared.settings import Settings


class PositionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeframe: str = "15m"
    stop_loss_pct: float = Field(default=0.03, gt=0, lt=1)
    take_profit_pct: float = Field(default=0.06, gt=0)
    key_ttl_sec: float = Field(default=DEFAULT_KEY_TTL_SEC, gt=0)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value


async def manage(ctx: RunContext, params: PositionParams, market: MarketData, broker: Broker) -> int:
    """Sell orders placed by this run."""
    candle_ts = closed_candle_open(ctx.scheduled_for, params.timeframe)
    placed, problems = 0, []
    for position in [p for p in await broker.positions() if p.qty > 0]:
        try:
            candles = await market.candles(position.ticker, params.timeframe, candle_ts, 1)
            last = through_closed(candles, candle_ts, position.ticker)[-1]
            reason = exit_reason(last.close, position.avg_price, params.stop_loss_pct, params.take_profit_pct)
            if reason is None:
                continue
            order = await place_once(
                ctx, broker, ticker=position.ticker, timeframe=params.timeframe, candle_ts=candle_ts, side="sell",
                qty=position.qty, reason=reason, key_ttl_sec=params.key_ttl_sec,
            )  # fmt: skip
            placed += order is not None
        except SchedulerError as exc:
            problems.append(f"{position.ticker}: {exc}")
    ctx.log.info("trading.positions_checked", candle_ts=candle_ts, orders=placed, problems=len(problems))
    if problems:
        raise CycleIncomplete("; ".join(problems)[:1000])
    return placed


def build_positions(config: ClientConfig, settings: Settings) -> HandlerFn:
    market, broker = HttpMarketData.from_config(config), HttpBroker.from_config(config)

    async def handle(ctx: RunContext, params: PositionParams) -> None:
        await manage(ctx, params, market, broker)

    return handle
