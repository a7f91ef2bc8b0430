"""The bot's replies reach a chat in the order the citizen's messages came (defect 10, reply order)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from sqlalchemy import select

from channels.base import Channel, Inbound, Outbound, Outcome, Pacer, Sent
from hub.delivery import run_workers
from hub.inbound import handle_inbound
from hub.store.models import Topic
from tests.conftest import make_settings, start_hub

TOPICS = [
    "kota-serang",
    "kota-serang/ktp-el",
    "kota-serang/kk",
    "kota-serang/kia",
    "kota-serang/akta",
    "kota-serang/pindah-datang",
    "kabupaten-serang",
    "kabupaten-serang/ktp-el",
    "kota-pekalongan",
    "kota-sukabumi",
]


class Chat(Channel):
    """A chat client: each send takes its own time on the network, as real sends do."""

    name: ClassVar[str] = "chat"

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.random = random.Random(8)

    @classmethod
    def from_settings(cls, settings: Any, *, public_url: str) -> Chat:
        return cls()

    def normalize_address(self, raw: str) -> str:
        return raw.strip()

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            await asyncio.sleep(self.random.uniform(0.0, 0.05))
            self.received.append((item.address, item.content.text))
            yield item.delivery_id, Sent(f"m{item.delivery_id}")


async def test_ten_quick_commands_are_answered_in_order(database, redis_url):
    url, schema = database
    chat = Chat()
    hub = await start_hub(
        make_settings(url, redis_url, None, schema, urgent_jobs=10), extra_channels={"chat": chat}
    )
    workers = asyncio.create_task(run_workers(hub))
    try:
        async with hub.db.session() as session:
            names = {t.slug: t.name for t in (await session.execute(select(Topic))).scalars()}
        # Ten messages in quick succession, as a webhook delivers them: each is handled as it arrives.
        arrivals = [
            asyncio.create_task(
                handle_inbound(
                    hub,
                    Inbound(
                        channel="chat",
                        kind="command",
                        address="citizen",
                        sender="citizen",
                        command="langganan",
                        args=(slug,),
                    ),
                )
            )
            for slug in TOPICS
        ]
        await asyncio.gather(*arrivals)
        for _ in range(600):
            if len(chat.received) >= len(TOPICS):
                break
            await asyncio.sleep(0.05)
        assert chat.received == [
            ("citizen", f"Anda berlangganan: {names[slug]}. Kirim /berhenti untuk berhenti.")
            for slug in TOPICS
        ]
    finally:
        workers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await workers
        await hub.close()
