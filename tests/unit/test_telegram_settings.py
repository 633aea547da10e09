"""The bot's configuration from the environment: no token, no bot; a token needs allowed chats; every mistake is
one error naming the variable and never the token."""

from __future__ import annotations

import pytest

from scheduler_seed.server.telegram import DEFAULT_API_URL, TelegramBot, from_env
from shared.errors import ConfigError
from shared.settings import Settings

TOKEN = "123456789:AAHsomethingSECRETlooking_value-42"
VARIABLES = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_ALLOWED_CHATS", "TELEGRAM_API_URL", "TELEGRAM_POLL_TIMEOUT_SEC")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_no_token_means_no_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(Settings(), "mock") is None
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "  ")
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "1")
    assert from_env(Settings(), "mock") is None


def test_a_token_with_allowed_chats_makes_a_bot_on_the_real_api_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", " 42, -100123 ,42")
    bot = from_env(Settings(), "real")
    assert isinstance(bot, TelegramBot)
    assert bot.chats == (42, -100123) and bot.scope == "real" and bot.api_url == DEFAULT_API_URL
    assert TOKEN.partition(":")[2] not in repr(bot)


def test_a_token_without_allowed_chats_refuses_to_start_without_quoting_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as caught:
        from_env(Settings(), "mock")
    assert "TELEGRAM_ALLOWED_CHATS names no chat" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TELEGRAM_BOT_TOKEN", "123456789-AAHsomethingSECRETlooking_value", "TELEGRAM_BOT_TOKEN is not a bot token"),
        ("TELEGRAM_ALLOWED_CHATS", "42,alice", "TELEGRAM_ALLOWED_CHATS 'alice' is not a chat id"),
        ("TELEGRAM_API_URL", "api.telegram.org", "TELEGRAM_API_URL must be an http:// or https:// URL"),
        ("TELEGRAM_POLL_TIMEOUT_SEC", "600", "TELEGRAM_POLL_TIMEOUT_SEC "),
    ],
)
def test_a_malformed_setting_is_one_error_naming_the_variable_never_the_value_of_the_token(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "42")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        from_env(Settings(), "mock")
    message = str(caught.value)
    assert message.startswith(says) and "\n" not in message
    assert "SECRETlooking" not in message
