"""A broadcast to 200 private chats, 3 groups and 1 channel through two `hub worker` processes at once."""

from __future__ import annotations

import re

from sqlalchemy import select

from hub import announcements, subscriptions
from hub.context import Hub
from hub.store.models import Endpoint
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import Workers, wait_done

PEOPLE = [710_000 + n for n in range(200)]
ENGLISH = set(PEOPLE[::20])  # 10 chats read English: theirs is the long text, in parts
BLOCKED = PEOPLE[7]
GROUP, SUPERGROUP, OLD_GROUP, NEW_GROUP = -4001, -4002, -4003, -1004003003
CHANNEL = -1005550001

PARAGRAPH = (
    "The population office keeps its counters open in limited hours while most services move to "
    "WhatsApp. Bring the original documents and a photocopy; the queue keeps a safe distance. "
)
LONG_EN = "\n\n".join(f"Part {n}. " + PARAGRAPH * 3 for n in range(1, 16))  # ~8,800 characters
SHORT_ID = "Pelayanan tatap muka dibatasi pukul 08.00–11.00 WIB; layanan lain melalui WhatsApp."

_PART = re.compile(r"^\((\d+)/(\d+)\) ")


async def test_broadcast_through_two_worker_processes(
    worker_hub: Hub, fake: FakeTelegram, workers: Workers
) -> None:
    hub = worker_hub
    assert len(LONG_EN) > 4096 * 2
    for user in PEOPLE:
        if user == BLOCKED:
            fake.add_blocked(user)
        else:
            fake.add_private(user, language_code="en" if user in ENGLISH else "id")
        await subscriptions.subscribe(
            hub,
            "kota-pekalongan",
            "telegram",
            str(user),
            confirmed=True,
            locale="en" if user in ENGLISH else "id",
        )
    fake.add_group(GROUP, title="Kelurahan Kraton Kidul")
    fake.add_group(SUPERGROUP, title="Kelurahan Panjang Wetan", supergroup=True)
    fake.add_migrated_group(OLD_GROUP, NEW_GROUP, title="Kelurahan Podosugih")
    fake.add_channel(CHANNEL, username="InfoDukcapilPekalongan")
    for chat in (GROUP, SUPERGROUP, OLD_GROUP):
        await subscriptions.subscribe(
            hub, "kota-pekalongan", "telegram", str(chat), confirmed=True, kind="group"
        )
    await subscriptions.subscribe(
        hub, "kota-pekalongan", "telegram", "@InfoDukcapilPekalongan", confirmed=True, kind="channel"
    )

    req = announcements.AnnouncementInput(
        template="free_text",
        topics=["kota-pekalongan"],
        data={
            "title": "Jam layanan terbatas",
            "text": SHORT_ID,
            "title_en": "Limited service hours",
            "text_en": LONG_EN,
        },
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    (status,) = await wait_done(hub, [message.id], workers, timeout=45)

    # Every chat got the message exactly once; English chats got every part, numbered and in order.
    english_chats = sorted(ENGLISH)
    for chat in [*PEOPLE, GROUP, NEW_GROUP, CHANNEL, SUPERGROUP]:
        if chat == BLOCKED:
            continue
        texts = [m.visible_text for m in fake.messages(chat)]
        if chat in english_chats:
            numbers = [_PART.match(t) for t in texts]
            assert all(numbers), (chat, [t[:20] for t in texts])
            total = int(numbers[0].group(2))  # type: ignore[union-attr]
            assert total >= 3
            assert [(int(n.group(1)), int(n.group(2))) for n in numbers] == [  # type: ignore[union-attr]
                (i, total) for i in range(1, total + 1)
            ], chat
            body = "".join(_PART.sub("", t) for t in texts)
            positions = [body.find(f"Part {n}. ") for n in range(1, 16)]
            assert -1 not in positions and positions == sorted(positions), chat
        else:
            assert len(texts) == 1, (chat, texts)
            assert "Jam layanan terbatas" in texts[0] and SHORT_ID in texts[0]
    assert fake.messages(OLD_GROUP) == []
    assert fake.messages(BLOCKED) == []
    assert fake.too_many_requests == 0, fake.errors_for("sendMessage")

    totals = status["totals"]
    assert totals["sent"] == 203 and totals["gone"] == 1, totals
    assert status["total"] == 204 and status["pending"] == 0
    async with hub.db.session() as session:
        blocked = await session.scalar(select(Endpoint).where(Endpoint.address == str(BLOCKED)))
        migrated = await session.scalar(
            select(Endpoint).where(Endpoint.kind == "group", Endpoint.address == str(NEW_GROUP))
        )
        old = await session.scalar(select(Endpoint).where(Endpoint.address == str(OLD_GROUP)))
    assert blocked is not None and not blocked.active and "blocked" in (blocked.deactivated_reason or "")
    assert migrated is not None and migrated.active and old is None
    workers.check()
