"""Fixtures for the Matrix adapter: one real Synapse per session, fresh users per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.matrix import MatrixChannel
from tests.services.synapse import MatrixUser, Person, SynapseServer, run_synapse


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    with run_synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture
async def new_user(synapse: SynapseServer) -> AsyncIterator[Callable[[str], Awaitable[Person]]]:
    humans: list[Person] = []

    async def make(prefix: str) -> Person:
        human = Person(synapse, synapse.register(f"{prefix}-{uuid.uuid4().hex[:8]}"))
        humans.append(human)
        return human

    yield make
    for human in humans:
        await human.http.aclose()


@pytest.fixture
def bot(synapse: SynapseServer) -> MatrixUser:
    """A bot account exempt from message limits, as a production bot should be (FACTS: override_ratelimit)."""
    user = synapse.register(f"bot-{uuid.uuid4().hex[:8]}")
    synapse.override_ratelimit(user.user_id, 0, 0)
    return user


@pytest.fixture
async def bot_person(synapse: SynapseServer, bot: MatrixUser) -> AsyncIterator[Person]:
    """The bot's account seen as a client, to join rooms the way an operator would."""
    person = Person(synapse, bot)
    yield person
    await person.http.aclose()


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
