"""Fixtures for the Matrix adapter: one real Synapse per session, fresh users per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from channels.matrix import MatrixChannel
from tests.services.synapse import MatrixUser, SynapseServer


@pytest.fixture
async def make_channel(
    synapse: SynapseServer, bot: MatrixUser, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[MatrixChannel]]]:
    """Open adapters for the test's bot; each can override settings. All are closed afterwards."""
    opened: list[MatrixChannel] = []

    async def make(**overrides: Any) -> MatrixChannel:
        settings: dict[str, Any] = {
            "homeserver": synapse.base_url,
            "user_id": bot.user_id,
            "access_token": bot.access_token,
            "device_id": bot.device_id,
            "store_path": str(tmp_path / "store"),
            "allowed_servers": [synapse.server_name],
            "poll_timeout": 2,
            **overrides,
        }
        channel = MatrixChannel.from_settings(settings, public_url="http://127.0.0.1")
        await channel.open()
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        await channel.close()
