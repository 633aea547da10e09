"""Step 1: fetch fresh daily candles for the universe (or `--tickers`) and store them for the day.

    python -m services.daily_pipeline.scripts.seed_fresh_data --data-dir D --date 2026-01-05 [--universe U]
        [--tickers A,B] [--days 30]

Needs MARKET_API_URL. Writes `D/<date>/market.json`, then `D/latest.json` pointing at it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, time

from services.clients.config import ClientConfig
from services.clients.market import HttpMarketData
from services.daily_pipeline.scripts.files import day_dir, latest_path, write_json
from shared.errors import SchedulerError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="seed_fresh_data", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--date", required=True, type=date.fromisoformat)
    parser.add_argument("--universe", default="kospi200")
    parser.add_argument("--tickers", default="", help="comma list instead of the universe")
    parser.add_argument("--days", type=int, default=30)
    return parser.parse_args(argv)


async def seed(args: argparse.Namespace) -> int:
    market = HttpMarketData.from_config(ClientConfig())
    tickers = [t for t in args.tickers.split(",") if t] or await market.tickers(args.universe)
    # Daily candles up to the one opening on the trading day (the API returns what exists so far).
    end_ts = int(datetime.combine(args.date, time(), tzinfo=UTC).timestamp())
    candles = {}
    for ticker in tickers:
        rows = await market.candles(ticker, "1d", end_ts, args.days)
        candles[ticker] = [c.model_dump() for c in rows]
    day = args.date.isoformat()
    data = {"date": day, "universe": args.universe, "candles": candles}
    write_json(day_dir(args.data_dir, day) / "market.json", data)
    write_json(latest_path(args.data_dir), {"date": day})
    print(f"seeded {len(tickers)} tickers for {day}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(seed(args))
    except (SchedulerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
