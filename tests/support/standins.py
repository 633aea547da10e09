"""Local stand-ins for the outside systems (market data API, broker, LLM, news feed): real HTTP servers on
127.0.0.1 that a test starts, points a service at (MARKET_API_URL, ...), and reads back.

Each records every request; the broker counts orders and does NOT deduplicate them, so a test that counts
one order proves the service's own guard.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.local_http import LocalHttp, Reply

JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = JSON

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(data).encode())


class StandIn(LocalHttp):
    """A recording HTTP server of JSON requests; subclasses implement `answer`."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def answer(self, request: Request) -> Answer:
        raise NotImplementedError

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def respond(self, method: str, path: str, query: dict[str, str], content_type: str, raw: bytes) -> Reply:
        request = Request(method, path.rstrip("/") or "/", query, json.loads(raw) if raw else None)
        with self.lock:
            self.requests.append(request)
        try:
            answer = self.answer(request)
        except Exception as exc:  # a bug in a stand-in shows up as a 500 the test can read
            answer = Answer.json({"error": repr(exc)}, 500)
        return answer.status, answer.content_type, answer.body


# -- market data --------------------------------------------------------------------------------------------

TIMEFRAME_SEC = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400, "1d": 86400}


Series = Callable[[int, bool], dict[str, float]]  # (candle open time, is it the newest) -> candle


def flat_then(last_close: float, base: float = 100.0, last_volume: float = 5000.0) -> Series:
    """A series flat at `base` (high base+1, low base-1, volume 1000) whose newest candle closes at `last_close`."""

    def candle(ts: int, newest: bool) -> dict[str, float]:
        close = last_close if newest else base
        return {
            "ts": ts,
            "open": base,
            "high": max(base + 1, close),
            "low": min(base - 1, close),
            "close": close,
            "volume": last_volume if newest else 1000.0,
        }

    return candle


BREAKOUT = flat_then(110.0)  # buy signal, volume x5: a scan candidate
CRASH = flat_then(90.0)  # sell signal / stop-loss
FLAT = flat_then(100.0, last_volume=1000.0)  # hold


@dataclass
class MarketStandIn(StandIn):
    """Candles on the timeframe's UTC grid up to `end` (or up to `available_until`, to play a late candle)."""

    universe: dict[str, list[str]] = field(default_factory=lambda: {"kospi200": ["005930", "000660", "035420"]})
    series: dict[str, Series] = field(default_factory=dict)
    default_series: Series = BREAKOUT
    available_until: int | None = None
    delay_sec: float = 0.0  # a slow API: candle answers wait this long
    subscribed: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        StandIn.__init__(self)

    def answer(self, request: Request) -> Answer:
        if request.method == "GET" and request.path == "/tickers":
            return Answer.json({"tickers": self.universe.get(request.query.get("universe", ""), [])})
        if request.method == "GET" and request.path == "/candles":
            time.sleep(self.delay_sec)
            return Answer.json({"candles": self._candles(request.query)})
        if request.path == "/subscriptions" and request.method in {"POST", "DELETE"}:
            subscriber, tickers = request.body["subscriber"], set(request.body["tickers"])
            with self.lock:
                current = self.subscribed.setdefault(subscriber, set())
                current |= tickers if request.method == "POST" else set()
                current -= tickers if request.method == "DELETE" else set()
            key = "subscribed" if request.method == "POST" else "unsubscribed"
            return Answer.json({key: sorted(tickers)})
        return Answer.json({"error": "not found"}, 404)

    def _candles(self, query: dict[str, str]) -> list[dict[str, Any]]:
        size = TIMEFRAME_SEC[query["timeframe"]]
        end = int(query["end"]) // size * size
        if self.available_until is not None:
            end = min(end, self.available_until // size * size)
        limit = int(query.get("limit", 50))
        make = self.series.get(query["ticker"], self.default_series)
        return [make(end - i * size, i == 0) for i in reversed(range(limit))]


# -- broker -------------------------------------------------------------------------------------------------


@dataclass
class BrokerStandIn(StandIn):
    positions: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    reject_orders: bool = False

    def __post_init__(self) -> None:
        StandIn.__init__(self)

    def answer(self, request: Request) -> Answer:
        if request.method == "GET" and request.path == "/positions":
            return Answer.json({"positions": self.positions})
        if request.method == "POST" and request.path == "/orders":
            if self.reject_orders:
                return Answer.json({"error": "market closed"}, 503)
            with self.lock:
                self.orders.append(request.body)
                order_id = f"ord-{len(self.orders)}"
            return Answer.json({"order_id": order_id})
        return Answer.json({"error": "not found"}, 404)


# -- LLM ----------------------------------------------------------------------------------------------------


@dataclass
class LlmStandIn(StandIn):
    """An OpenAI-compatible chat completions endpoint answering `reply` (a JSON-able value or a string)."""

    reply: Any = field(default_factory=lambda: {"picks": [{"ticker": "005930", "reason": "steady volume"}]})

    def __post_init__(self) -> None:
        StandIn.__init__(self)

    def answer(self, request: Request) -> Answer:
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            content = self.reply if isinstance(self.reply, str) else json.dumps(self.reply)
            return Answer.json({"choices": [{"message": {"role": "assistant", "content": content}}]})
        return Answer.json({"error": "not found"}, 404)

    def prompts(self) -> list[str]:
        return [r.body["messages"][-1]["content"] for r in self.calls("POST")]


# -- news ---------------------------------------------------------------------------------------------------


def rss(items: list[tuple[str, str, str]]) -> bytes:
    """An RSS 2.0 document of (guid, title, link) items."""
    entries = "".join(
        f"<item><guid>{g}</guid><title>{t}</title><link>{u}</link><pubDate>Mon, 05 Jan 2026 08:00:00 GMT</pubDate>"
        "</item>"
        for g, t, u in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{entries}</channel></rss>'.encode()


@dataclass
class NewsStandIn(StandIn):
    body: bytes = field(default_factory=lambda: rss([("a1", "First", "https://n.example/1")]))

    def __post_init__(self) -> None:
        StandIn.__init__(self)

    def answer(self, request: Request) -> Answer:
        if request.method == "GET":
            return Answer(200, self.body, "application/rss+xml")
        return Answer.json({"error": "not found"}, 404)
