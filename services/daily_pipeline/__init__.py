"""Daily pipeline (`002_acd719624cf61f24.txt`): step 1 `seed_fresh_data` (market data), then step 2
`generate_cases` (LLM cases), each a script run as a child process with a timeout. Two jobs on queue
`daily-pipeline`: `daily-pipeline-seed` (cron, `on_success = ["daily-pipeline-cases"]`) and
`daily-pipeline-cases` (`reschedule_mode = "none"`): step 2 runs only after step 1 succeeded."""

from services.common import Route, ServiceSpec
from services.daily_pipeline.steps import StepParams, build

SPEC = ServiceSpec(
    "daily_pipeline", (Route("daily-pipeline", StepParams, build),), needs=("market_api_url", "llm_api_url")
)
