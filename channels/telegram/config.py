"""The ``[channels.telegram]`` table, validated when the hub starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from channels.base import ChannelSettings

#: The hub's webhook route for this channel (``hub/api``: ``/v1/channels/{channel}/webhook``).
DEFAULT_WEBHOOK_PATH = "/v1/channels/telegram/webhook"


class TelegramSettings(ChannelSettings):
    """``[channels.telegram]``."""

    #: From BotFather; put it in the environment (``HUB_CHANNELS__TELEGRAM__TOKEN``).
    token: str
    #: Another Bot API server (a local one, or a test's); unset: api.telegram.org.
    base_url: str | None = None
    #: Bot-wide messages per second, shared by every worker through Redis.
    rate_per_second: float = Field(30.0, gt=0)
    per_chat_per_second: float = Field(1.0, gt=0)
    group_per_minute: float = Field(20.0, gt=0)
    #: ``allow_paid_broadcast`` (enabled in BotFather, paid in Stars): then ``paid_rate_per_second``.
    paid_broadcast: bool = False
    paid_rate_per_second: float = Field(1000.0, gt=0)
    #: Sent back by Telegram in ``X-Telegram-Bot-Api-Secret-Token``; required in webhook mode.
    webhook_secret: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,256}$")
    #: ``polling`` (no public address: ``hub listen telegram`` or ``hub run``) or ``webhook``.
    mode: Literal["polling", "webhook"] = "polling"
    webhook_path: str = DEFAULT_WEBHOOK_PATH
    #: The bot's @username, for t.me deep links on applicant receipts (getMe corrects it).
    username: str | None = None
    #: Pace this fraction under the bot-wide limit, and ``chat_safety_margin`` under per-chat limits.
    safety_margin: float = Field(0.02, ge=0)
    chat_safety_margin: float = Field(0.1, ge=0)
    pacing_waiters: int = Field(8, ge=1)
    http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    connections: int = Field(8, ge=1)
    concurrency: int = Field(32, ge=1)
    poll_timeout: int = Field(30, ge=0)
    #: Longest flood wait sat out inline between the parts of a split text.
    max_inline_wait: float = Field(60.0, ge=0)
    request_timeout: float = Field(10.0, gt=0)
