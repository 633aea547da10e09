"""Start or stop the live price subscription, by `params.action`.

The subscription lives at the market data API (subscribe / unsubscribe are idempotent there), so a restarted
or second replica needs no state of its own; the process only remembers what it last did, to log the
transition (`from` -> `to`) an operator reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.clients.config import ClientConfig
from services.clients.market import HttpMarketData, MarketData
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings


class MonitorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["start", "stop"]
    universe: str = Field(default="kospi200", min_length=1, max_length=64)
    tickers: list[str] = Field(default_factory=list, max_length=2000, description="instead of the universe")


@dataclass
class MonitorState:
    state: str = "unknown"  # unknown until this process has started or stopped the subscription once
    tickers: tuple[str, ...] = ()


async def apply(ctx: RunContext, params: MonitorParams, market: MarketData, state: MonitorState) -> None:
    subscriber = f"{ctx.scope}-price-monitor"
    if params.action == "start":
        tickers = params.tickers or await market.tickers(params.universe)
        await market.subscribe(tickers, subscriber)
        new = MonitorState("running", tuple(tickers))
    else:
        tickers = params.tickers or list(state.tickers) or await market.tickers(params.universe)
        await market.unsubscribe(tickers, subscriber)
        new = MonitorState("stopped", ())
    ctx.log.info(
        "price_monitor.transition", action=params.action, **{"from": state.state, "to": new.state},
        tickers=len(tickers),
    )  # fmt: skip
    state.state, state.tickers = new.state, new.tickers


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    market = HttpMarketData.from_config(config)
    state = MonitorState()

    async def handle(ctx: RunContext, params: MonitorParams) -> None:
        await apply(ctx, params, market, state)

    return handle
