"""A language model behind an OpenAI-compatible chat completions API (LLM_API_URL, LLM_API_KEY, LLM_MODEL).

    POST {LLM_API_URL}/chat/completions {"model", "messages": [{"role", "content"}], "temperature"}
        -> {"choices": [{"message": {"content": "..."}}]}

LLM_API_URL is the API root including its version, e.g. `https://api.openai.com/v1`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from services.clients.config import ClientConfig
from services.clients.http import HttpClient, OutsideError, http_client

SYSTEM = "LLM API"


class Llm(Protocol):
    async def complete(self, system: str, prompt: str) -> str: ...


class HttpLlm:
    def __init__(self, http: HttpClient, model: str) -> None:
        self.http = http
        self.model = model

    @classmethod
    def from_config(cls, config: ClientConfig) -> HttpLlm:
        config.require("llm_api_url")
        token = config.secret(config.llm_api_key)
        return cls(http_client(SYSTEM, config.llm_api_url, token, config.outside_timeout_sec), config.llm_model)

    async def complete(self, system: str, prompt: str) -> str:
        body = {
            "model": self.model,
            "temperature": 0.2,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        }
        answer = await self.http.send_json("POST", "chat/completions", body)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise OutsideError(f"{SYSTEM}: answer has no choices[0].message.content") from None
        if not isinstance(content, str) or not content.strip():
            raise OutsideError(f"{SYSTEM}: empty completion")
        return content


def json_from_completion(text: str) -> Any:
    """The JSON value in a completion, tolerating a ```json fence around it (models add one)."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    try:
        return json.loads(stripped)
    except ValueError as exc:
        raise OutsideError(f"{SYSTEM}: the completion is not JSON ({exc})") from None
