"""Buy scanner: scans the market for breakout candidates (queue `buy-scanner`)."""

from services.buy_scanner.scan import ScanParams, build
from services.common import Route, ServiceSpec

SPEC = ServiceSpec("buy_scanner", (Route("buy-scanner", ScanParams, build),), needs=("market_api_url",))
