"""Telegram's errors mapped onto the hub's outcomes (DESIGN.md rule 6)."""

from __future__ import annotations

import warnings
from datetime import timedelta

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from channels.base import (
    Moved,
    Outcome,
    RecipientGone,
    Rejected,
    RetryLater,
)

# Permanent failures: the endpoint will never accept a message again (Telegram Bot FAQ).
_GONE_FORBIDDEN = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot was kicked",
    "bot can't initiate conversation",
    "bot is not a member",
    "bot can't send messages to bots",
)
_GONE_BAD_REQUEST = ("chat not found", "user not found", "group chat was deactivated", "peer_id_invalid")


def _retry_after_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` warns while PTB migrates it to ``timedelta``; accept both forms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def classify_error(exc: TelegramError) -> Outcome:
    """Map a PTB exception (other than ``RetryAfter``) onto an outcome; messages vary in case."""
    message = exc.message
    lowered = message.lower()
    if isinstance(exc, ChatMigrated):
        return Moved(str(exc.new_chat_id))
    if isinstance(exc, Forbidden):
        if any(phrase in lowered for phrase in _GONE_FORBIDDEN):
            return RecipientGone(message)
        return Rejected(message)
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest subclasses it
        if any(phrase in lowered for phrase in _GONE_BAD_REQUEST):
            return RecipientGone(message)
        return Rejected(message)
    if isinstance(exc, InvalidToken):
        return RetryLater(f"bot token refused: {message}", provider=True)
    if isinstance(exc, NetworkError):  # includes TimedOut and HTTP 5xx: Telegram's trouble, not the chat's
        return RetryLater(message, provider=True)
    return Rejected(message)


def _is_transient(exc: TelegramError) -> bool:
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)
