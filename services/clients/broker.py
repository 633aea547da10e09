"""The broker: open positions and orders.

HTTP contract (BROKER_API_URL):
    GET  /positions  -> {"positions": [{"ticker", "qty", "avg_price"}]}
    POST /orders {"ticker", "side": "buy"|"sell", "qty", "client_order_id"}  -> {"order_id": "..."}

`client_order_id` is the idempotency key of the order, so a broker that deduplicates by it is a second guard.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from services.clients.config import ClientConfig
from services.clients.http import HttpClient, OutsideError, http_client

SYSTEM = "broker API"
Side = Literal["buy", "sell"]


class Position(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    ticker: str
    qty: float
    avg_price: float


class Broker(Protocol):
    async def positions(self) -> list[Position]: ...

    async def place_order(self, ticker: str, side: Side, qty: float, client_order_id: str) -> str: ...


class HttpBroker:
    def __init__(self, http: HttpClient) -> None:
        self.http = http

    @classmethod
    def from_config(cls, config: ClientConfig) -> HttpBroker:
        config.require("broker_api_url")
        token = config.secret(config.broker_api_key)
        return cls(http_client(SYSTEM, config.broker_api_url, token, config.outside_timeout_sec))

    async def positions(self) -> list[Position]:
        answer = await self.http.get_json("positions")
        try:
            return [Position.model_validate(p) for p in answer["positions"]]
        except (ValidationError, KeyError, TypeError) as exc:
            raise OutsideError(f"{SYSTEM}: bad positions answer: {str(exc).splitlines()[0]}") from None

    async def place_order(self, ticker: str, side: Side, qty: float, client_order_id: str) -> str:
        body = {"ticker": ticker, "side": side, "qty": qty, "client_order_id": client_order_id}
        answer = await self.http.send_json("POST", "orders", body)
        if not isinstance(answer, dict) or not answer.get("order_id"):
            raise OutsideError(f"{SYSTEM}: order for {ticker} not acknowledged (no order_id)")
        return str(answer["order_id"])
