"""The pure parts of the example services: candle arithmetic and signals, the order key, feed and model answer
parsing, the pipeline's command lines, and the client configuration. No server, no clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.candles import (
    CandleNotReady,
    Signal,
    breakout_signal,
    closed_candle_open,
    exit_reason,
    order_key,
    scan_score,
    through_closed,
    timeframe_seconds,
)
from services.clients.config import ClientConfig
from services.clients.http import OutsideError, http_client
from services.clients.llm import json_from_completion
from services.clients.market import Candle
from services.clients.news import parse_feed
from services.daily_pipeline.steps import StepParams, child_env, step_argv, trading_day
from services.scout.draft import parse_watchlist
from services.trading.cycle import decide
from shared.errors import ConfigError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ts(text: str) -> int:
    return int(at(text).timestamp())


@pytest.mark.parametrize(
    ("when", "timeframe", "candle"),
    [
        ("2026-01-05 10:01:00", "1h", "2026-01-05 09:00:00"),  # the trading cycle at :01 trades the hour before
        ("2026-01-05 10:00:00", "1h", "2026-01-05 09:00:00"),  # on the boundary the candle has just closed
        ("2026-01-05 10:59:59", "1h", "2026-01-05 09:00:00"),
        ("2026-01-05 10:16:00", "15m", "2026-01-05 10:00:00"),  # position management at :16
        ("2026-01-05 10:46:00", "15m", "2026-01-05 10:30:00"),
        ("2026-01-05 00:00:30", "1d", "2026-01-04 00:00:00"),
    ],
)
def test_closed_candle_is_the_last_one_fully_closed(when: str, timeframe: str, candle: str) -> None:
    assert closed_candle_open(at(when), timeframe) == ts(candle)


def test_closed_candle_needs_an_aware_time_and_a_known_timeframe() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        closed_candle_open(datetime(2026, 1, 5, 10, 1), "1h")
    with pytest.raises(ValueError, match="timeframe '2h'"):
        timeframe_seconds("2h")


def test_order_key_has_the_format_of_the_design_notes() -> None:
    assert order_key("005930", "1h", 1767603600, "buy") == "005930-1h-1767603600-buy"


def candle(t: int, close: float, volume: float = 1000.0) -> Candle:
    return Candle(ts=t, open=close, close=close, high=close + 1, low=close - 1, volume=volume)


def series(*closes: float, last_volume: float = 1000.0) -> list[Candle]:
    candles = [candle(i * 60, c) for i, c in enumerate(closes)]
    candles[-1] = candle((len(closes) - 1) * 60, closes[-1], volume=last_volume)
    return candles


def test_breakout_signal_needs_the_close_beyond_the_range() -> None:
    assert breakout_signal(series(100, 100, 100, 110), lookback=3) is Signal.BUY
    assert breakout_signal(series(100, 100, 100, 90), lookback=3) is Signal.SELL
    assert breakout_signal(series(100, 100, 100, 100.5), lookback=3) is Signal.HOLD
    assert breakout_signal(series(100, 110), lookback=3) is Signal.HOLD  # too little history


def test_scan_score_wants_a_breakout_on_high_volume() -> None:
    assert scan_score(series(100, 100, 100, 110, last_volume=1000), 3, volume_factor=1.5) is None
    assert scan_score(series(100, 100, 100, 100, last_volume=5000), 3, volume_factor=1.5) is None
    score = scan_score(series(100, 100, 100, 110, last_volume=5000), 3, volume_factor=1.5)
    assert score is not None and score > 0


def test_through_closed_drops_a_forming_candle_and_refuses_a_missing_one() -> None:
    candles = [candle(0, 1), candle(60, 2), candle(120, 3)]
    assert [c.ts for c in through_closed(candles, 60, "X")] == [0, 60]
    with pytest.raises(CandleNotReady, match="candle 180 not in the market data yet"):
        through_closed(candles, 180, "X")


def test_decide_buys_only_what_is_not_held_and_sells_only_what_is() -> None:
    assert decide(Signal.BUY, holding=False) is Signal.BUY
    assert decide(Signal.BUY, holding=True) is Signal.HOLD
    assert decide(Signal.SELL, holding=True) is Signal.SELL
    assert decide(Signal.SELL, holding=False) is Signal.HOLD


def test_exit_reason_at_the_stop_loss_and_take_profit_levels() -> None:
    assert exit_reason(97.0, 100.0, 0.03, 0.06) == "stop_loss"
    assert exit_reason(106.0, 100.0, 0.03, 0.06) == "take_profit"
    assert exit_reason(101.0, 100.0, 0.03, 0.06) is None


def test_parse_feed_reads_rss_atom_and_json() -> None:
    rss = b"""<?xml version="1.0"?><rss><channel><item><guid>g1</guid><title>A</title><link>https://x/1</link>
        </item><item><title></title><link></link></item></channel></rss>"""
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>e1</id><title>B</title>
        <link href="https://x/2"/><updated>2026-01-05T00:00:00Z</updated></entry></feed>"""
    data = b'{"items": [{"id": 7, "title": "C", "url": "https://x/3"}]}'
    assert [(a.id, a.title, a.url) for a in parse_feed(rss)] == [("g1", "A", "https://x/1")]
    assert [(a.id, a.url, a.published) for a in parse_feed(atom)] == [("e1", "https://x/2", "2026-01-05T00:00:00Z")]
    assert [(a.id, a.title) for a in parse_feed(data)] == [("7", "C")]
    without_guid = parse_feed(b"<rss><channel><item><title>D</title><link>https://x/4</link></item></channel></rss>")
    assert (
        without_guid[0].id == parse_feed(b"<rss><channel><item><link>https://x/4</link></item></channel></rss>")[0].id
    )


def test_parse_feed_refuses_what_is_no_feed() -> None:
    with pytest.raises(OutsideError, match="cannot parse the feed"):
        parse_feed(b"<html><body>oops")


def test_model_answers_are_read_with_or_without_a_fence() -> None:
    assert json_from_completion('```json\n{"a": 1}\n```') == {"a": 1}
    assert json_from_completion(' {"a": 2} ') == {"a": 2}
    with pytest.raises(OutsideError, match="not JSON"):
        json_from_completion("Sure! Here you go")
    picks = parse_watchlist('{"picks": [{"ticker": "A"}, {"ticker": "B"}, {"ticker": "C"}]}', max_picks=2)
    assert [p.ticker for p in picks] == ["A", "B"]
    with pytest.raises(OutsideError, match="not in the asked shape"):
        parse_watchlist('{"stocks": []}', max_picks=2)


def test_pipeline_step_command_lines_and_trading_day() -> None:
    monday_kst = at("2026-01-04 23:00:00")  # Sunday 23:00 UTC is Monday 08:00 in Seoul
    assert trading_day(monday_kst, "Asia/Seoul") == "2026-01-05"
    seed = step_argv(StepParams(step="seed_fresh_data", tickers=["A", "B"], days=5), monday_kst, "/d")
    assert seed[1:] == [
        "-m", "services.daily_pipeline.scripts.seed_fresh_data", "--data-dir", "/d",
        "--date", "2026-01-05", "--universe", "kospi200", "--days", "5", "--tickers", "A,B",
    ]  # fmt: skip
    cases = step_argv(StepParams(step="generate_cases"), monday_kst, "/d")
    assert cases[2:] == ["services.daily_pipeline.scripts.generate_cases", "--data-dir", "/d", "--max-cases", "5"]


def test_pipeline_children_get_the_outside_settings_but_no_broker_or_database_secrets() -> None:
    environ = {
        "PATH": "/bin",
        "MARKET_API_URL": "http://m",
        "LLM_API_KEY": "sk",
        "AMQP_URL": "amqp://u:p@h/",
        "DATABASE_URL": "postgresql://u:p@h/db",
    }
    assert child_env(environ) == {"PATH": "/bin", "MARKET_API_URL": "http://m", "LLM_API_KEY": "sk"}


def test_client_config_names_every_missing_variable_and_checks_urls() -> None:
    config = ClientConfig(market_api_url="", llm_api_url=None, broker_api_url="http://b")
    with pytest.raises(ConfigError, match="needs MARKET_API_URL, LLM_API_URL"):
        config.require("market_api_url", "llm_api_url", "broker_api_url")
    with pytest.raises(ConfigError, match="is not http") as refused:
        http_client("market data API", "ftp://user:secret@host/", None, 5)
    assert "secret" not in str(refused.value)
    client = http_client("market data API", "http://h:1/api/", None, 5)
    assert client.url("candles", {"ticker": "A", "end": 5, "skip": None}) == "http://h:1/api/candles?ticker=A&end=5"
