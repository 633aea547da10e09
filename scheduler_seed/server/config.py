"""The server's own settings (environment variables), apart from the workers' `shared.settings.Settings`."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MOCK_PORT, OTHER_PORT = 9095, 8095  # the seed's Scheduler API ports (001_646fd6323acf08fa.txt, section 10)


def default_port(scope: str) -> int:
    """9095 for scope `mock`, 8095 for any other (the cheat sheet's mock and real Scheduler APIs)."""
    return MOCK_PORT if scope == "mock" else OTHER_PORT


class ServerSettings(BaseSettings):
    """`CONTROL_API_TOKENS`, `GRAFANA_URL`, `CONTROL_API_HOST`, `CONTROL_API_PORT`."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # `name:role:token,...` with roles viewer / operator; a secret, so never shown by repr or in a log
    control_api_tokens: SecretStr = Field(default=SecretStr(""))
    grafana_url: str = Field(default="http://localhost:3000", description="links to the job's panel and its logs")
    control_api_host: str = "127.0.0.1"
    control_api_port: int | None = Field(default=None, ge=1, le=65535)
    ui_refresh_sec: float = Field(default=2.0, gt=0, le=3600)
