"""JSON over HTTP with the standard library, run in a thread so the event loop never blocks.

Every failure becomes one `OutsideError` line naming the system, the method and path, and what went wrong
(no URL credentials, no response body beyond a short excerpt).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError, SchedulerError
from shared.settings import redact_url

MAX_RESPONSE_BYTES = 10 * 1024 * 1024


class OutsideError(SchedulerError):
    """An outside system did not answer, or answered with an error or something that is not what we expect."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self, system: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise OutsideError(f"{system}: the answer is not JSON ({exc})") from None


@dataclass(frozen=True, slots=True)
class HttpClient:
    """One outside system at `base_url`; `token` is sent as a bearer token when set."""

    system: str
    base_url: str
    token: str | None = None
    timeout_sec: float = 15.0

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        base = self.base_url.rstrip("/")
        url = f"{base}/{path.lstrip('/')}" if path else base
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(pairs, doseq=True)
        return url

    async def request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> Response:
        """Send one request; raise OutsideError on a network failure or a non-2xx answer."""
        return await asyncio.to_thread(self._request, method, path, query, body)

    async def get_json(self, path: str, **query: Any) -> Any:
        return (await self.request("GET", path, query=query)).json(self.system)

    async def send_json(self, method: str, path: str, body: Any) -> Any:
        response = await self.request(method, path, body=body)
        return response.json(self.system) if response.body.strip() else None

    def _request(self, method: str, path: str, query: dict[str, Any] | None, body: Any) -> Response:
        url = self.url(path, query)
        headers = {"Accept": "application/json", "User-Agent": "rabbit-chain-scheduler"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        where = f"{self.system}: {method} {redact_url(self.url(path))}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_sec) as answer:
                payload = answer.read(MAX_RESPONSE_BYTES + 1)
                if len(payload) > MAX_RESPONSE_BYTES:
                    raise OutsideError(f"{where}: answer larger than {MAX_RESPONSE_BYTES} bytes")
                return Response(answer.status, answer.headers.get("Content-Type", ""), payload)
        except urllib.error.HTTPError as exc:
            excerpt = exc.read(300).decode("utf-8", "replace").replace("\n", " ").strip()
            raise OutsideError(f"{where}: HTTP {exc.code} {excerpt}".rstrip()) from None
        except urllib.error.URLError as exc:
            raise OutsideError(f"{where}: unreachable ({exc.reason})") from None
        except (TimeoutError, OSError) as exc:
            raise OutsideError(f"{where}: {type(exc).__name__}: {exc}") from None


def http_client(system: str, base_url: str | None, token: str | None, timeout_sec: float) -> HttpClient:
    """Validate the URL scheme up front, so a typo in an env var fails at start-up, not at the first run."""
    if not base_url:
        raise ConfigError(f"{system}: no URL configured")
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in {"http", "https"}:
        raise ConfigError(f"{system}: URL {redact_url(base_url)!r} is not http(s)")
    return HttpClient(system, base_url, token, timeout_sec)
