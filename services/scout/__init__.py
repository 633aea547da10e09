"""Scout: a daily watchlist drafted by a language model (queue `scout`, job `scout-daily`)."""

from services.common import Route, ServiceSpec
from services.scout.draft import ScoutParams, build

SPEC = ServiceSpec("scout", (Route("scout", ScoutParams, build),), needs=("llm_api_url",))
