"""The real scout run: ask the model for the day's watchlist as JSON, validate it, log each pick."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.clients.config import ClientConfig
from services.clients.http import OutsideError
from services.clients.llm import HttpLlm, Llm, json_from_completion
from shared.context import RunContext
from shared.registry import HandlerFn
from shared.settings import Settings

SYSTEM_PROMPT = (
    "You are an equity research assistant. Answer with JSON only, no prose: "
    '{"picks": [{"ticker": "<code>", "reason": "<one sentence>"}]}'
)


class ScoutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    universe: str = Field(default="kospi200", min_length=1, max_length=64)
    tickers: list[str] = Field(default_factory=list, max_length=500, description="choose among these only")
    focus: str = Field(default="swing trades for the coming week", max_length=500)
    max_picks: int = Field(default=5, ge=1, le=50)


class Pick(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ticker: str = Field(min_length=1, max_length=32)
    reason: str = Field(default="", max_length=2000)


class Watchlist(BaseModel):
    model_config = ConfigDict(extra="ignore")

    picks: list[Pick]


def prompt(params: ScoutParams, day: str) -> str:
    among = f"among {', '.join(params.tickers)}" if params.tickers else f"from the {params.universe} universe"
    return f"Date {day}. Pick at most {params.max_picks} stocks {among} for {params.focus}."


def parse_watchlist(text: str, max_picks: int) -> list[Pick]:
    """The picks of a completion; OutsideError when it is not the JSON asked for."""
    try:
        watchlist = Watchlist.model_validate(json_from_completion(text))
    except ValidationError as exc:
        raise OutsideError(f"LLM API: the watchlist is not in the asked shape ({exc.error_count()} problems)") from None
    return watchlist.picks[:max_picks]


async def draft(ctx: RunContext, params: ScoutParams, llm: Llm) -> list[Pick]:
    day = ctx.scheduled_for.date().isoformat()
    picks = parse_watchlist(await llm.complete(SYSTEM_PROMPT, prompt(params, day)), params.max_picks)
    for rank, pick in enumerate(picks, 1):
        ctx.log.info("scout.pick", rank=rank, ticker=pick.ticker, reason=pick.reason[:300])
    ctx.log.info("scout.finished", picks=len(picks), day=day)
    return picks


def build(config: ClientConfig, settings: Settings) -> HandlerFn:
    llm = HttpLlm.from_config(config)

    async def handle(ctx: RunContext, params: ScoutParams) -> None:
        await draft(ctx, params, llm)

    return handle
