"""A local stand-in of the Telegram Bot API for the bot's tests: a real HTTP server on 127.0.0.1 answering what
the bot calls under `/bot<token>/<method>`: getMe, deleteWebhook, getUpdates (queued updates at once, else a
long poll that ends empty after the asked timeout) and sendMessage (recorded; refused as Telegram refuses an
empty or over-long text). A wrong token gets 401 and an unknown method 404, as from the real API.

A test queues chat messages with `say`, reads what the bot sent with `sent`, and makes the API fail with
`fail_next`. aiogram posts form-encoded bodies; JSON and multipart bodies are read too.

The server plumbing is `tests.support.local_http`'s; `standins.StandIn` reads JSON bodies only, this one reads
forms too.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.local_http import LocalHttp, Reply

TOKEN = "123456789:AAHstandinSECRETtokenVALUE_for-tests0"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Scheduler", "username": "scheduler_test_bot"}
MESSAGE_LIMIT = 4096
MAX_POLL_SEC = 50.0


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Sent:
    chat_id: int
    text: str
    at: float


class TelegramStandIn(LocalHttp):
    """The Bot API for one bot (`token`), see the module docstring."""

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.calls: list[Call] = []
        self.messages: list[Sent] = []
        self._updates: list[dict[str, Any]] = []  # not yet confirmed by an offset
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._failures: list[tuple[str, int, str]] = []  # (method, status, description), next first
        self._changed = threading.Condition()
        self._stopped = False

    # -- what a test does -------------------------------------------------------------------------------------

    def say(self, chat_id: int, text: str, user_id: int | None = None) -> int:
        """A message from a person in `chat_id` (a private chat unless the id is negative); its update id."""
        with self._changed:
            update_id = next(self._update_ids)
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split(" ")[0])}]
            self._updates.append(
                {
                    "update_id": update_id,
                    "message": {
                        "message_id": next(self._message_ids),
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                        "from": {"id": user_id or abs(chat_id), "is_bot": False, "first_name": "Operator"},
                        "text": text,
                        **({"entities": entities} if text.startswith("/") else {}),
                    },
                }
            )
            self._changed.notify_all()
        return update_id

    def fail_next(
        self, method: str = "getUpdates", times: int = 1, status: int = 502, what: str = "Bad Gateway"
    ) -> None:
        """The next `times` calls of `method` answer `status` (502: the API is down for a moment)."""
        with self._changed:
            self._failures.extend([(method, status, what)] * times)

    def sent(self, chat_id: int | None = None) -> list[Sent]:
        with self._changed:
            return [m for m in self.messages if chat_id is None or m.chat_id == chat_id]

    def called(self, method: str) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method]

    def confirmed(self, update_id: int) -> bool:
        """Has the bot fetched `update_id` and confirmed it (a later getUpdates offset past it)?"""
        with self._changed:
            return all(u["update_id"] != update_id for u in self._updates) and any(
                int(c.params.get("offset", 0)) > update_id for c in self.calls if c.method == "getUpdates"
            )

    async def ask(self, chat_id: int, text: str, answers: int = 1, timeout: float = 20.0) -> list[str]:
        """Say `text` in `chat_id` and wait (without blocking the event loop the bot runs on) for `answers`
        new messages to that chat; their texts."""
        before = len(self.sent(chat_id))
        self.say(chat_id, text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.sent(chat_id)[before:]
            if len(got) >= answers:
                return [m.text for m in got]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no answer to {text!r} in chat {chat_id} within {timeout} s: {self.sent(chat_id)}")

    async def wait_for(self, method: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.called(method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} was not called {count} time(s) within {timeout} s")
            await asyncio.sleep(0.05)

    # -- the API ----------------------------------------------------------------------------------------------

    def answer(self, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = path[len(prefix) :]
        with self._changed:
            self.calls.append(Call(method, params, time.monotonic()))
            failure = next((f for f in self._failures if f[0].lower() == method.lower()), None)
            if failure is not None:
                self._failures.remove(failure)
                return failure[1], {"ok": False, "error_code": failure[1], "description": failure[2]}
        handlers: dict[str, Callable[[], Any]] = {
            "getme": lambda: BOT_USER,
            "deletewebhook": lambda: True,
            "getupdates": lambda: self._get_updates(params),
            "sendmessage": lambda: self._send_message(params),
        }
        handler = handlers.get(method.lower())
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            return 200, {"ok": True, "result": handler()}
        except ValueError as exc:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        wait = min(float(params.get("timeout") or 0), MAX_POLL_SEC)
        deadline = time.monotonic() + wait
        with self._changed:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._stopped and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return list(self._updates[: int(params.get("limit") or 100)])

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("text") or "")
        if not text.strip():
            raise ValueError("message text is empty")
        if len(text.encode("utf-16-le")) // 2 > MESSAGE_LIMIT:
            raise ValueError("message is too long")
        chat_id = int(params["chat_id"])
        with self._changed:
            self.messages.append(Sent(chat_id, text, time.monotonic()))
            message_id = next(self._message_ids)
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
        return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": BOT_USER, "text": text}

    # -- the server -------------------------------------------------------------------------------------------

    def respond(self, method: str, path: str, query: dict[str, str], content_type: str, raw: bytes) -> Reply:
        params: dict[str, Any] = {**query, **_body(content_type, raw)}
        try:
            status, data = self.answer(path, params)
        except Exception as exc:  # a bug in the stand-in shows as a 500 the test can read
            status, data = 500, {"ok": False, "error_code": 500, "description": repr(exc)}
        return status, "application/json", json.dumps(data).encode()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        super().stop()


def _body(content_type: str, raw: bytes) -> dict[str, Any]:
    """Form fields of a urlencoded, multipart or JSON body."""
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        return dict(json.loads(raw))
    if content_type.startswith("multipart/"):
        header = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            payload = part.get_payload(decode=True)
            fields[str(part.get_param("name", header="content-disposition"))] = bytes(payload).decode()
        return fields
    return dict(urllib.parse.parse_qsl(raw.decode()))
