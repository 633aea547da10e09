"""Placing an order at most once per candle: `ctx.idempotency.claim(key)` before the broker is called.

The key is `{ticker}-{timeframe}-{candle_ts}-{action}` (`004_70f9434baac141a5.txt`). Claiming first makes a
second delivery of the same candle (a redelivery, a retry, a manual run, a second replica) skip the order.
The price of at-most-once: if the broker call fails after the claim, this candle places no order; the
failure is logged with the key (also sent as `client_order_id`) so it can be reconciled at the broker.
"""

from __future__ import annotations

from services.candles import order_key
from services.clients.broker import Broker, Side
from shared.context import RunContext

DEFAULT_KEY_TTL_SEC = 7 * 86400


async def place_once(
    ctx: RunContext,
    broker: Broker,
    *,
    ticker: str,
    timeframe: str,
    candle_ts: int,
    side: Side,
    qty: float,
    reason: str,
    key_ttl_sec: float = DEFAULT_KEY_TTL_SEC,
) -> str | None:
    """The broker's order id, or None when this candle's order was already claimed."""
    key = order_key(ticker, timeframe, candle_ts, side)
    if not await ctx.idempotency.claim(key, key_ttl_sec):
        ctx.log.info("order.duplicate_skipped", key=key, ticker=ticker, side=side)
        return None
    try:
        order_id = await broker.place_order(ticker, side, qty, key)
    except Exception as exc:
        ctx.log.error("order.unconfirmed", key=key, ticker=ticker, side=side, qty=qty, error=str(exc)[:300])
        raise
    ctx.log.info("order.placed", key=key, order_id=order_id, ticker=ticker, side=side, qty=qty, reason=reason)
    return order_id
