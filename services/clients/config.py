"""Where the outside systems are: environment variables read once, checked only for what a service needs."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError


class ClientConfig(BaseSettings):
    """Field names are the env var names. URLs are optional here: a service asks for the ones it needs
    (`require`), so a mock service, or a real one that needs no market data, starts without them."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    market_api_url: str | None = Field(default=None, description="market data API base URL")
    market_api_key: SecretStr | None = Field(default=None, description="bearer token for the market data API")
    broker_api_url: str | None = Field(default=None, description="broker (orders, positions) API base URL")
    broker_api_key: SecretStr | None = Field(default=None, description="bearer token for the broker API")
    llm_api_url: str | None = Field(default=None, description="OpenAI-compatible API base URL (…/v1 is appended)")
    llm_api_key: SecretStr | None = Field(default=None, description="bearer token for the LLM API")
    llm_model: str = Field(default="gpt-4o-mini", description="model name sent to the LLM API")
    news_feed_url: str | None = Field(default=None, description="RSS, Atom or JSON news feed URL")
    outside_timeout_sec: float = Field(default=15.0, gt=0, le=600, description="timeout of one outside call")
    pipeline_data_dir: str = Field(
        default="/tmp/daily-pipeline", description="where the daily pipeline steps write their files"
    )

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every env var in `names` that is unset or empty."""
        missing = [name.upper() for name in names if not getattr(self, name.lower())]
        if missing:
            raise ConfigError(f"SERVICE_MODE=real needs {', '.join(missing)} (unset or empty)")

    @staticmethod
    def secret(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value() or None
