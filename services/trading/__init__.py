"""Trading: the hourly trading cycle and the 15-minute position management, two jobs on queue `trading` in one
lock group (`trading`), so they never run at the same time; every order is guarded by an idempotency key."""

from services.common import Route, ServiceSpec
from services.trading.cycle import CycleParams, build_cycle
from services.trading.positions import PositionParams, build_positions

SPEC = ServiceSpec(
    "trading",
    (
        Route("trading", CycleParams, build_cycle, job="trading-cycle"),
        Route("trading", PositionParams, build_positions, job="position-management"),
    ),
    needs=("market_api_url", "broker_api_url"),
)
