"""Price monitor: live price subscriptions started and stopped by two cron jobs on one queue
(`price-monitor-start` / `price-monitor-stop`, queue `price-monitor`, `default_params.action`)."""

from services.common import Route, ServiceSpec
from services.price_monitor.monitor import MonitorParams, build

SPEC = ServiceSpec("price_monitor", (Route("price-monitor", MonitorParams, build),), needs=("market_api_url",))
