"""The real scan: candles of every ticker of the universe up to the candle that just closed, scored for
breakouts on high volume; the candidates are logged, best first."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.candles import closed_candle_open, scan_score, through_closed, timeframe_seconds
from services.clients.config import ClientConfig
from services.clients.http import OutsideError
from services.clients.market import HttpMarketData, MarketData
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings

FETCH_CONCURRENCY = 8  # parallel candle requests: enough to be quick, few enough to be polite to the API


class ScanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    universe: str = Field(default="kospi200", min_length=1, max_length=64)
    tickers: list[str] = Field(default_factory=list, max_length=2000, description="scan these instead of a universe")
    timeframe: str = "1d"
    lookback: int = Field(default=20, ge=2, le=500)
    volume_factor: float = Field(default=1.5, ge=0)
    max_candidates: int = Field(default=20, ge=1, le=1000)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value


class ScanFailed(OutsideError):
    """No ticker could be scanned."""


async def scan(ctx: RunContext, params: ScanParams, market: MarketData) -> list[tuple[str, float]]:
    """Score every ticker; return the candidates (ticker, score), best first. Fails only when no ticker could
    be scanned (one ticker's bad data does not sink the scan)."""
    tickers = params.tickers or await market.tickers(params.universe)
    candle_ts = closed_candle_open(ctx.scheduled_for, params.timeframe)
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def score(ticker: str) -> tuple[str, float | None]:
        async with limit:
            candles = await market.candles(ticker, params.timeframe, candle_ts, params.lookback + 1)
        return ticker, scan_score(through_closed(candles, candle_ts, ticker), params.lookback, params.volume_factor)

    results = await asyncio.gather(*(score(t) for t in tickers), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors[:5]:
        ctx.log.warning("scan.ticker_failed", error=str(error)[:300])
    if tickers and len(errors) == len(tickers):
        raise ScanFailed(f"no ticker could be scanned ({len(errors)} failed; first: {errors[0]})")
    scored = [r for r in results if isinstance(r, tuple) and r[1] is not None]
    candidates = sorted(((t, s) for t, s in scored if s is not None), key=lambda c: -c[1])[: params.max_candidates]
    for rank, (ticker, value) in enumerate(candidates, 1):
        ctx.log.info("scan.candidate", rank=rank, ticker=ticker, score=value, candle_ts=candle_ts)
    ctx.log.info(
        "scan.finished", scanned=len(tickers), failed=len(errors), candidates=len(candidates), candle_ts=candle_ts
    )
    return candidates


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    """The real handler, bound to a market data client built once from the environment."""
    market = HttpMarketData.from_config(config)

    async def handle(ctx: RunContext, params: ScanParams) -> None:
        await scan(ctx, params, market)

    return handle
