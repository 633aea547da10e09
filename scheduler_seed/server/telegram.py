"""The Telegram bot of the control plane: pause, resume and run now from a chat (seed 001's first goal), the jobs'
status and runs, and Alertmanager's alerts forwarded to the operators' chats.

    bot = from_env(settings, scope)  # None when TELEGRAM_BOT_TOKEN is unset
    if bot is not None:
        await bot.start()  # long polling in a background task the bot owns
        ...
        await bot.notify("FIRING ChainLost job=buy-scanner")
        await bot.stop()

Only chats named in TELEGRAM_ALLOWED_CHATS are answered; any other chat gets no answer at all (a bot's name is
easy to find) and the refusal is logged with its chat id. Every command acts through the control layer as
`telegram:<chat id>`, so the audit names the chat. The bot is a control plane, not a scheduler: stopping it
stops no job. The token is a secret: it never reaches a log line, an answer or an error message.

Built on aiogram 3 (`Dispatcher` long polling over an aiohttp session whose base URL is TELEGRAM_API_URL, so
tests point it at a local stand-in of the Bot API). aiogram retries a failed `getUpdates` with back-off on its
own; a failure before polling starts (getMe, deleteWebhook) is retried here with the project's back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import traceback
from datetime import UTC, datetime

import structlog
from aiogram import Bot, Dispatcher, Router
from aiogram import loggers as aiogram_loggers
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import AiogramError, TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.types import Message
from aiogram.utils.backoff import BackoffConfig
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler_seed.server import telegram_replies as replies
from scheduler_seed.server.telegram_commands import USAGE, Command, CommandError, Verb, parse
from shared.backoff import backoff
from shared.control import Control, kind_of
from shared.control.instants import later
from shared.errors import ConfigError
from shared.settings import Settings, redact_url

__all__ = ["TelegramBot", "TelegramSettings", "from_env"]

log = structlog.get_logger("scheduler_seed.server.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")  # what BotFather issues: <bot id>:<secret>
_CHAT = re.compile(r"^-?\d{1,20}$")
SEND_ATTEMPTS = 3
STOP_GRACE_SEC = 5.0
POLLING_HEALTHY_SEC = 60.0  # polling that ran this long before failing starts its back-off afresh


class TelegramSettings(BaseSettings):
    """The bot's environment: TELEGRAM_BOT_TOKEN, TELEGRAM_ALLOWED_CHATS, TELEGRAM_API_URL,
    TELEGRAM_POLL_TIMEOUT_SEC."""

    model_config = SettingsConfigDict(env_prefix="TELEGRAM_", case_sensitive=False, extra="ignore", frozen=True)

    bot_token: SecretStr | None = Field(default=None, description="the bot's token from BotFather; unset: no bot")
    allowed_chats: str = Field(default="", description="comma list of chat ids the bot answers (groups negative)")
    api_url: str = Field(default=DEFAULT_API_URL, description="Bot API base URL (a local stand-in in tests)")
    poll_timeout_sec: int = Field(default=25, ge=1, le=50, description="long-polling wait of one getUpdates")

    @field_validator("bot_token", mode="before")
    @classmethod
    def _token_shape(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or not _TOKEN.fullmatch(value.strip()):
            # never quote the value: a token with a typo is still mostly a secret
            raise ValueError("is not a bot token (BotFather gives '<digits>:<secret>')")
        return value.strip()

    @field_validator("allowed_chats")
    @classmethod
    def _chat_ids(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and not _CHAT.fullmatch(part.strip()):
                raise ValueError(f"{part.strip()[:40]!r} is not a chat id (comma-separated integers: 12345,-10099)")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def chats(self) -> tuple[int, ...]:
        """The allowed chat ids, in the order given, without repeats."""
        ids = (int(part) for part in self.allowed_chats.split(",") if part.strip())
        return tuple(dict.fromkeys(ids))


def from_env(settings: Settings, scope: str, *, telegram: TelegramSettings | None = None) -> TelegramBot | None:
    """The bot the environment asks for: None when TELEGRAM_BOT_TOKEN is unset. ConfigError (one line, naming
    the variable, never the token) for a malformed setting or a token with no allowed chat."""
    if telegram is None:
        try:
            telegram = TelegramSettings()
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None
    if telegram.bot_token is None:
        return None
    if not telegram.chats:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN is set but TELEGRAM_ALLOWED_CHATS names no chat: give the chat ids the bot may "
            "answer (comma separated), or unset the token; a bot that answers nobody is not started"
        )
    return TelegramBot(settings, scope, telegram)


def _explain(exc: ValidationError) -> str:
    """The problems as `VARIABLE: reason`, without the input values pydantic would quote (the token among them)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = "TELEGRAM_" + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{name} {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


class _RedactSecrets(logging.Filter):
    """Masks the token in the library's own log records (an HTTP error quoting the request URL, say)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            trace = "".join(traceback.format_exception(*record.exc_info))
            if any(secret in trace for secret in self.secrets):
                message, record.exc_info, record.exc_text = f"{message}\n{trace}", None, None
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


class TelegramBot:
    """Answers `/job ...` commands in the allowed chats by long polling, and sends notices to them."""

    def __init__(self, settings: Settings, scope: str, telegram: TelegramSettings) -> None:
        if telegram.bot_token is None:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set")
        self.settings = settings
        self.scope = scope
        self.chats = telegram.chats
        self.api_url = telegram.api_url
        self.poll_timeout_sec = telegram.poll_timeout_sec
        token = telegram.bot_token.get_secret_value()
        self._secrets = (token, token.partition(":")[2])
        self._bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.api_url)))
        self._dispatcher = Dispatcher()
        router = Router(name="scheduler-control")
        router.message.register(self._on_message)
        self._dispatcher.include_router(router)
        self._filter = _RedactSecrets(self._secrets)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[object]] = set()

    def __repr__(self) -> str:
        return f"TelegramBot(scope={self.scope!r}, chats={self.chats!r}, api_url={redact_url(self.api_url)!r})"

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin long polling in a background task owned by the bot (a second call does nothing)."""
        if self._task is not None:
            return
        for logger in _library_loggers():
            logger.addFilter(self._filter)
        self._stopping.clear()
        self._task = asyncio.create_task(self._poll(), name="telegram-polling")
        log.info("telegram.started", scope=self.scope, chats=len(self.chats), api_url=redact_url(self.api_url))

    async def stop(self) -> None:
        """Stop polling, let commands being answered finish (a few seconds at most), close the HTTP session
        (`notify` alone opens one too)."""
        if self._task is None:
            await self._bot.session.close()
            return
        self._stopping.set()
        # stop_polling ends aiogram's own tasks; between two attempts polling is not running and cancelling is enough
        with contextlib.suppress(RuntimeError, TimeoutError):
            await asyncio.wait_for(self._dispatcher.stop_polling(), STOP_GRACE_SEC)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=STOP_GRACE_SEC)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._bot.session.close()
        for logger in _library_loggers():
            logger.removeFilter(self._filter)
        log.info("telegram.stopped", scope=self.scope)

    async def _poll(self) -> None:
        attempt = 0
        retry = BackoffConfig(
            min_delay=0.5, max_delay=max(1.0, self.settings.dependency_retry_max_sec), factor=2.0, jitter=0.1
        )
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await self._bot.delete_webhook(drop_pending_updates=False)  # getUpdates is refused while one is set
                await self._dispatcher.start_polling(
                    self._bot,
                    polling_timeout=self.poll_timeout_sec,
                    backoff_config=retry,
                    allowed_updates=["message"],
                    handle_signals=False,  # the process that runs the bot owns its signals
                    close_bot_session=False,  # `notify` keeps working between polling attempts
                )
            except Exception as exc:
                if self._stopping.is_set():
                    return
                attempt = 1 if time.monotonic() - began > POLLING_HEALTHY_SEC else attempt + 1
                delay = backoff(attempt, self.settings.dependency_retry_max_sec, random.random())
                log.warning(
                    "telegram.polling_retrying",
                    attempt=attempt,
                    error=self._redact(f"{type(exc).__name__}: {exc}"),
                    retry_in_sec=round(delay, 2),
                )
                await asyncio.sleep(delay)

    # -- commands -----------------------------------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._answer(message)
        except Exception as exc:  # an update must never take polling down; the chat gets what could be said
            log.error("telegram.answer_failed", chat_id=message.chat.id, error=self._redact(repr(exc)))
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _answer(self, message: Message) -> None:
        chat_id = message.chat.id
        if chat_id not in self.chats:
            user = message.from_user.id if message.from_user is not None else None
            log.warning("telegram.refused", chat_id=chat_id, user_id=user, reason="chat not in TELEGRAM_ALLOWED_CHATS")
            return
        try:
            command = parse(message.text, (await self._bot.me()).username)
        except CommandError as exc:
            for text in replies.messages(str(exc).splitlines()):
                await self._send(chat_id, text)
            return
        if command is None:
            return
        log.info("telegram.command", chat_id=chat_id, verb=command.verb.value, job_id=command.job_id)
        for text in await self._act(chat_id, command):
            await self._send(chat_id, text)

    async def _act(self, chat_id: int, command: Command) -> list[str]:
        """The answer to one command, acting through the control layer as `telegram:<chat id>`."""
        if command.verb is Verb.HELP:
            return [USAGE]
        try:
            async with Control(self.settings, self.scope, actor=f"telegram:{chat_id}") as control:
                return await _carry_out(control, command, datetime.now(UTC))
        except Exception as exc:
            if kind_of(exc) is None:  # a bug, not an operator's mistake: the log gets the traceback
                log.exception("telegram.command_crashed", chat_id=chat_id, verb=command.verb.value)
            else:
                log.info("telegram.command_refused", chat_id=chat_id, verb=command.verb.value, error=str(exc))
            return [replies.failure(exc, datetime.now(UTC))]

    # -- sending ------------------------------------------------------------------------------------------------

    async def notify(self, text: str) -> None:
        """Send `text` (an alert: one line each) to every allowed chat; split when longer than Telegram allows.
        A chat that cannot be reached is logged and the others still get it; this never raises for delivery."""
        if not text.strip():
            return
        parts = replies.messages(text.splitlines())
        await asyncio.gather(*(self._send_all(chat_id, parts) for chat_id in self.chats))

    async def _send_all(self, chat_id: int, parts: list[str]) -> None:
        for part in parts:
            if not await self._send(chat_id, part):
                return

    async def _send(self, chat_id: int, text: str) -> bool:
        """One message, retried with back-off while the Bot API is down or asks to slow down; False when given up."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                await self._bot.send_message(chat_id, text)
                return True
            except TelegramRetryAfter as exc:
                delay = float(exc.retry_after)
                error = "rate limited"
            except (TelegramNetworkError, TelegramServerError) as exc:
                delay = backoff(attempt, self.settings.dependency_retry_max_sec, random.random())
                error = self._redact(f"{type(exc).__name__}: {exc}")
            except AiogramError as exc:  # refused for good (blocked, no such chat): retrying cannot help
                log.error("telegram.send_failed", chat_id=chat_id, error=self._redact(f"{type(exc).__name__}: {exc}"))
                return False
            if attempt < SEND_ATTEMPTS:
                log.warning("telegram.send_retrying", chat_id=chat_id, attempt=attempt, error=error, retry_in_sec=delay)
                await asyncio.sleep(delay)
        log.error("telegram.send_failed", chat_id=chat_id, attempts=SEND_ATTEMPTS, error=error)
        return False

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _library_loggers() -> tuple[logging.Logger, ...]:
    return (
        aiogram_loggers.dispatcher,
        aiogram_loggers.event,
        aiogram_loggers.middlewares,
        aiogram_loggers.webhook,
        aiogram_loggers.scene,
    )


async def _carry_out(control: Control, command: Command, now: datetime) -> list[str]:
    job_id = command.job_id or ""
    if command.verb is Verb.STATUS:
        return replies.messages(replies.status_lines(await control.status(), now))
    if command.verb is Verb.RUN:
        return [replies.queued(await control.run_now(job_id))]
    if command.verb is Verb.PAUSE:
        until = None if command.until is None else later(command.until, now, (await control.job(job_id)).timezone)
        return [replies.paused(await control.pause(job_id, note=command.note, until=until), command.note, until)]
    if command.verb is Verb.RESUME:
        return [replies.resumed(await control.resume(job_id))]
    return replies.messages(replies.run_lines(job_id, await control.runs(job_id, command.limit), now))
