"""Step 2: turn the latest day's market data into a few case studies written by a language model.

    python -m services.daily_pipeline.scripts.generate_cases --data-dir D [--max-cases 5]

Needs LLM_API_URL (and LLM_API_KEY, LLM_MODEL as the API wants). Reads `D/latest.json` and the day's
`market.json`; writes `D/<date>/cases.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.clients.config import ClientConfig
from services.clients.llm import HttpLlm, json_from_completion
from services.daily_pipeline.scripts.files import day_dir, latest_path, read_json, write_json
from shared.errors import SchedulerError

SYSTEM_PROMPT = (
    "You write short historical case studies for retail investors. Answer with JSON only: "
    '{"cases": [{"ticker": "<code>", "title": "<title>", "summary": "<three sentences>"}]}'
)


class Case(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ticker: str = Field(min_length=1)
    title: str = Field(min_length=1)
    summary: str = ""


class Cases(BaseModel):
    cases: list[Case]


class StepError(SchedulerError):
    pass


def summarize(market: dict[str, Any]) -> list[str]:
    """One line per ticker: last close and the change over the window (what the model is asked about)."""
    lines = []
    for ticker, candles in sorted(market.get("candles", {}).items()):
        if len(candles) >= 2 and candles[0]["close"]:
            change = (candles[-1]["close"] / candles[0]["close"] - 1) * 100
            lines.append(f"{ticker}: close {candles[-1]['close']:g}, {change:+.1f}% over {len(candles)} days")
    return lines


async def generate(data_dir: str, max_cases: int) -> int:
    try:
        day = read_json(latest_path(data_dir))["date"]
        market = read_json(day_dir(data_dir, day) / "market.json")
    except (OSError, KeyError, ValueError) as exc:
        raise StepError(f"no market data from step 1 in {data_dir} ({exc})") from None
    lines = summarize(market)
    if not lines:
        raise StepError(f"market data of {day} has no ticker with two candles")
    llm = HttpLlm.from_config(ClientConfig())
    prompt = f"Market data of {day}:\n" + "\n".join(lines) + f"\nWrite at most {max_cases} cases."
    try:
        cases = Cases.model_validate(json_from_completion(await llm.complete(SYSTEM_PROMPT, prompt))).cases
    except ValidationError as exc:
        raise StepError(f"the model's cases are not in the asked shape ({exc.error_count()} problems)") from None
    cases = cases[:max_cases]
    write_json(day_dir(data_dir, day) / "cases.json", {"date": day, "cases": [c.model_dump() for c in cases]})
    print(f"generated {len(cases)} cases for {day}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generate_cases", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--max-cases", type=int, default=5)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(generate(args.data_dir, args.max_cases))
    except (SchedulerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
