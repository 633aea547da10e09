"""Market data: the ticker universe, OHLCV candles, and live price subscriptions (the price monitor).

HTTP contract (MARKET_API_URL):
    GET    /tickers?universe=U                      -> {"tickers": ["005930", ...]}
    GET    /candles?ticker=T&timeframe=1h&end=TS&limit=N
                                                   -> {"candles": [{"ts", "open", "high", "low", "close", "volume"}]}
           candles ascending by `ts` (the candle's open time, Unix seconds), the last one opening at or before `end`
    POST   /subscriptions {"tickers": [...], "subscriber": S}   -> {"subscribed": [...]}
    DELETE /subscriptions {"tickers": [...], "subscriber": S}   -> {"unsubscribed": [...]}
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from services.clients.config import ClientConfig
from services.clients.http import HttpClient, OutsideError, http_client

SYSTEM = "market data API"


class Candle(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


class MarketData(Protocol):
    async def tickers(self, universe: str) -> list[str]: ...

    async def candles(self, ticker: str, timeframe: str, end_ts: int, limit: int) -> list[Candle]: ...

    async def subscribe(self, tickers: list[str], subscriber: str) -> None: ...

    async def unsubscribe(self, tickers: list[str], subscriber: str) -> None: ...


def _field(answer: Any, key: str) -> Any:
    if not isinstance(answer, dict) or key not in answer:
        raise OutsideError(f"{SYSTEM}: answer has no {key!r}")
    return answer[key]


class HttpMarketData:
    def __init__(self, http: HttpClient) -> None:
        self.http = http

    @classmethod
    def from_config(cls, config: ClientConfig) -> HttpMarketData:
        config.require("market_api_url")
        token = config.secret(config.market_api_key)
        return cls(http_client(SYSTEM, config.market_api_url, token, config.outside_timeout_sec))

    async def tickers(self, universe: str) -> list[str]:
        tickers = _field(await self.http.get_json("tickers", universe=universe), "tickers")
        if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
            raise OutsideError(f"{SYSTEM}: 'tickers' is not a list of strings")
        return tickers

    async def candles(self, ticker: str, timeframe: str, end_ts: int, limit: int) -> list[Candle]:
        answer = await self.http.get_json("candles", ticker=ticker, timeframe=timeframe, end=end_ts, limit=limit)
        raw = _field(answer, "candles")
        try:
            candles = [Candle.model_validate(c) for c in raw]
        except (ValidationError, TypeError) as exc:
            raise OutsideError(f"{SYSTEM}: bad candle for {ticker}: {str(exc).splitlines()[0]}") from None
        return sorted(candles, key=lambda c: c.ts)

    async def subscribe(self, tickers: list[str], subscriber: str) -> None:
        await self.http.send_json("POST", "subscriptions", {"tickers": tickers, "subscriber": subscriber})

    async def unsubscribe(self, tickers: list[str], subscriber: str) -> None:
        await self.http.send_json("DELETE", "subscriptions", {"tickers": tickers, "subscriber": subscriber})
