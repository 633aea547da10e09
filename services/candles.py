"""Pure candle arithmetic shared by the market services: timeframes, the candle that just closed, signals.

No I/O and no clock: the time is always an argument (the run's `scheduled_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from shared.errors import SchedulerError

TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400}


class CandleLike(Protocol):
    @property
    def ts(self) -> int: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...


C = TypeVar("C", bound=CandleLike)


class CandleNotReady(SchedulerError):
    """The market data does not have the closed candle yet: the run fails and its retry asks again."""


class Signal(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


def timeframe_seconds(timeframe: str) -> int:
    """Seconds of a timeframe (`1m`, `5m`, `15m`, `30m`, `1h`, `4h`, `1d`); ValueError for anything else."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise ValueError(f"timeframe {timeframe!r} is not one of {', '.join(TIMEFRAMES)}") from None


def closed_candle_open(at: datetime, timeframe: str) -> int:
    """Open time (Unix seconds, UTC grid) of the last candle fully closed at `at`.

    A run at 10:01 for `1h` gets the 09:00 candle (closed at 10:00); at exactly 10:00 too. Every delivery of
    one slot computes the same value, which is what makes it an idempotency key."""
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    size = timeframe_seconds(timeframe)
    return int(at.timestamp()) // size * size - size


def through_closed(candles: Sequence[C], candle_ts: int, ticker: str) -> list[C]:
    """The candles up to and including the one opening at `candle_ts`, which must be there: a candle still
    forming (later `ts`) is left out, a missing closed candle raises CandleNotReady."""
    closed = [c for c in candles if c.ts <= candle_ts]
    if not closed or closed[-1].ts != candle_ts:
        last = closed[-1].ts if closed else None
        raise CandleNotReady(f"{ticker}: candle {candle_ts} not in the market data yet (latest {last})")
    return closed


def order_key(ticker: str, timeframe: str, candle_ts: int, action: str) -> str:
    """The duplicate-order guard of `004_70f9434baac141a5.txt`: one order per ticker, candle and action."""
    return f"{ticker}-{timeframe}-{candle_ts}-{action}"


def breakout_signal(candles: Sequence[CandleLike], lookback: int) -> Signal:
    """BUY when the last close breaks above the highest high of the `lookback` candles before it, SELL when it
    breaks below their lowest low, else HOLD (also with too little history)."""
    if lookback < 1 or len(candles) < lookback + 1:
        return Signal.HOLD
    *history, last = candles[-(lookback + 1) :]
    if last.close > max(c.high for c in history):
        return Signal.BUY
    if last.close < min(c.low for c in history):
        return Signal.SELL
    return Signal.HOLD


def volume_ratio(candles: Sequence[CandleLike], lookback: int) -> float:
    """Last volume over the mean volume of the `lookback` candles before it (0 when there is no history)."""
    history = candles[-(lookback + 1) : -1]
    mean = sum(c.volume for c in history) / len(history) if history else 0.0
    return candles[-1].volume / mean if mean > 0 and candles else 0.0


def scan_score(candles: Sequence[CandleLike], lookback: int, volume_factor: float) -> float | None:
    """A buy candidate's score: a breakout on at least `volume_factor` times the usual volume, scored by how far
    above the range it closed times the volume ratio. None when the candle is no candidate."""
    if breakout_signal(candles, lookback) is not Signal.BUY:
        return None
    ratio = volume_ratio(candles, lookback)
    if ratio < volume_factor:
        return None
    ceiling = max(c.high for c in candles[-(lookback + 1) : -1])
    return round((candles[-1].close / ceiling - 1) * 100 * ratio, 4)


def exit_reason(close: float, avg_price: float, stop_loss_pct: float, take_profit_pct: float) -> str | None:
    """`stop_loss` or `take_profit` when a position should be closed at `close`, else None."""
    if avg_price <= 0:
        return None
    change = close / avg_price - 1
    if change <= -stop_loss_pct:
        return "stop_loss"
    if change >= take_profit_pct:
        return "take_profit"
    return None
