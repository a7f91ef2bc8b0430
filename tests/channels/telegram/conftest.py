"""Fixtures for the Telegram adapter tests: a fresh fake Bot API per test, always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from channels.telegram import TelegramChannel
from tests.fakes.telegram_api import FakeTelegram

WEBHOOK_SECRET = "rahasia-webhook_123"


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    server = FakeTelegram().start()
    try:
        yield server
    finally:
        server.stop()


ChannelFactory = Callable[..., Awaitable[TelegramChannel]]


@pytest.fixture
async def make_telegram(fake_telegram: FakeTelegram) -> AsyncIterator[ChannelFactory]:
    """Opened adapters pointed at the fake; keyword arguments override settings keys."""
    opened: list[TelegramChannel] = []

    async def make(public_url: str = "http://127.0.0.1:9", **overrides: object) -> TelegramChannel:
        settings: dict[str, object] = {
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "webhook_secret": WEBHOOK_SECRET,
            "poll_timeout": 1,
            # The adapter's declared rates exactly as Telegram documents them (no safety margin).
            "safety_margin": 0,
            "chat_safety_margin": 0,
            **overrides,
        }
        channel = TelegramChannel.from_settings(settings, public_url=public_url)
        opened.append(channel)
        await channel.open()
        return channel

    try:
        yield make
    finally:
        for channel in opened:
            await channel.close()


@pytest.fixture
async def telegram(make_telegram: ChannelFactory) -> TelegramChannel:
    return await make_telegram()


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET
