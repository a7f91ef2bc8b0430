"""Telegram adapter on python-telegram-bot's ``Bot`` (no ``Application``: the hub owns the loop).

Limits are not enforced here but declared to the shared pacer (DESIGN.md rule 5); Telegram's own errors
are mapped onto the five outcomes of ``channels.base`` (rule 6). Long texts are split into numbered
parts because Telegram caps a message at 4096 characters after entity parsing.

The package is split by concern: ``channel`` (settings, capabilities, addresses, pacing, sending),
``html`` (splitting and re-balancing Telegram HTML), ``transport`` (aiohttp under PTB), ``inbound``
(updates to records), ``errors`` (Telegram's errors to outcomes).
"""

import os

# Opt in to PTB's future ``timedelta`` time periods now: otherwise every ``RetryAfter`` warns.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from channels.telegram.channel import (
    CHANNEL,
    DEFAULT_WEBHOOK_PATH,
    TelegramChannel,
    TelegramSettings,
    _rate,
)
from channels.telegram.errors import classify_error
from channels.telegram.html import MAX_MESSAGE_LENGTH, content_html, split_html, visible_text
from channels.telegram.inbound import ALLOWED_UPDATES, SECRET_HEADER
from channels.telegram.transport import AiohttpRequest

__all__ = [
    "ALLOWED_UPDATES",
    "CHANNEL",
    "DEFAULT_WEBHOOK_PATH",
    "MAX_MESSAGE_LENGTH",
    "SECRET_HEADER",
    "AiohttpRequest",
    "TelegramChannel",
    "TelegramSettings",
    "_rate",
    "classify_error",
    "content_html",
    "split_html",
    "visible_text",
]
