"""``Capabilities.opt_in_by_message``: on such a channel the hub writes first to no one.

A provider may allow a business to write only to people who opted in to it (WhatsApp Business: the
citizen's own message or a recorded opt-in). Imports and staff subscriptions there stay pending and send
no confirmation; the citizen's own subscribe command from the chat confirms, and only then do
broadcasts reach them. A channel without the capability keeps its double opt-in by confirmation.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from channels.base import Inbound
from channels.testing import ScriptedChannel
from hub import announcements, subscriptions
from hub.clock import utcnow
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.store.models import Endpoint, Subscription, Topic
from tests.conftest import make_settings, start_hub


@pytest.fixture
async def ohub(database, redis_url, smtp):
    url, schema = database
    chat = ScriptedChannel(name="chat", opt_in_by_message=True)
    plain = ScriptedChannel(name="plain")
    hub = await start_hub(
        make_settings(url, redis_url, smtp[1], schema), extra_channels={"chat": chat, "plain": plain}
    )
    hub.chat, hub.plain = chat, plain  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


async def _subscriptions(hub, channel: str) -> dict[str, tuple[str, bool]]:
    """address -> (state, whether the time of the state's change is recorded) on kota-serang."""
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address, Subscription.state, Subscription.state_changed_at)
            .join(Subscription, Subscription.endpoint_id == Endpoint.id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Endpoint.channel == channel, Topic.slug == "kota-serang")
        )
        return {r.address: (r.state, r.state_changed_at is not None) for r in rows.all()}


async def _broadcast(hub) -> None:
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-serang"], data={"title": "Uji", "text": "Pesan uji."}
    )
    await announcements.create(hub, req, publish=True)
    await drain(hub)


async def test_imports_and_staff_subscriptions_wait_for_the_citizens_own_message(ohub):
    csv = "phone\n+6281200000001\n+6281200000002\n"
    for confirmed in (True, False):
        counts = await subscriptions.import_csv(ohub, csv, "kota-serang", "chat", confirmed=confirmed)
        assert counts["rows"] == 2
        await subscriptions.import_csv(ohub, csv, "kota-serang", "plain", confirmed=confirmed)
    staff = await subscriptions.subscribe(ohub, "kota-serang", "chat", "+6281200000003", confirmed=True)
    assert staff.state == "pending" and staff.confirmation_message_id is None
    await drain(ohub)
    assert ohub.chat.calls == []  # no confirmation, nothing at all
    assert await _subscriptions(ohub, "chat") == {
        "+6281200000001": ("pending", True),
        "+6281200000002": ("pending", True),
        "+6281200000003": ("pending", True),
    }
    assert set((await _subscriptions(ohub, "plain")).values()) == {("confirmed", True)}

    await _broadcast(ohub)
    assert ohub.chat.calls == []
    assert {item.address for item in ohub.plain.sent} == {"+6281200000001", "+6281200000002"}

    # The citizen writes "DAFTAR kota-serang" from the chat: that is the opt-in.
    asked = utcnow()
    await handle_inbound(
        ohub,
        Inbound(
            channel="chat",
            kind="command",
            address="+6281200000002",
            sender="+6281200000002",
            command="daftar",
            args=("kota-serang",),
        ),
    )
    assert (await _subscriptions(ohub, "chat"))["+6281200000002"] == ("confirmed", True)
    async with ohub.db.session() as session:  # the opt-in's time is recorded: when it was confirmed
        opted_in = await session.scalar(
            select(Subscription.state_changed_at)
            .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
            .where(Endpoint.channel == "chat", Endpoint.address == "+6281200000002")
        )
    assert opted_in is not None and opted_in >= asked
    await drain(ohub)  # the bot's answer
    ohub.chat.calls.clear()
    await _broadcast(ohub)
    assert [item.address for item in ohub.chat.calls] == ["+6281200000002"]
