"""Only a group's admins change what the group receives or what it is (subscribe, unsubscribe, register as a
kelurahan relay, erase); every member may still ask what only reads (``/jam``, ``/layanan``). The adapter
asks Telegram (getChatMember) who the sender is; the hub decides. End to end through the webhook route and
the loopback Bot API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import select

from hub.bot import relay_code
from hub.context import Hub
from hub.store.models import Endpoint, Subscription, Topic
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import Chat

ADMIN, HEAD, MEMBER, VISITOR = 850_001, 850_002, 850_003, 850_004
GROUP = -4_500_001

ADMINS_ONLY = "Maaf, hanya admin grup ini yang dapat mengubah langganan atau pendaftaran grup."
ADMINS_ONLY_EN = "Sorry, only this group's admins can change its subscriptions or registration."
SUBSCRIBED = "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim /berhenti untuk berhenti."
#: The first and third lines of ``/jam`` (the second is today's, which depends on the day the test runs).
HOURS = ["Jam layanan Dindukcapil Kota Pekalongan:", "Senin–Kamis 08.00–11.00; Jumat 08.00–10.00 WIB"]


async def group_state(hub: Hub) -> tuple[str | None, str | None]:
    """The group's subscription to its office's general topic, and the office it relays for."""
    async with hub.db.session() as session:
        group = await session.scalar(
            select(Endpoint).where(Endpoint.channel == "telegram", Endpoint.address == str(GROUP))
        )
        if group is None:
            return None, None
        state = await session.scalar(
            select(Subscription.state)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.endpoint_id == group.id, Topic.slug == "kota-pekalongan")
        )
        return state, group.relay_office_id


async def test_only_admins_change_what_a_group_receives(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    fake.add_group(GROUP, title="Kelurahan Kraton Kidul", creator=HEAD, admins=(ADMIN,))
    code = await relay_code(hub, "kota-pekalongan")
    async with hub.db.session() as session:
        topic = await session.scalar(select(Topic).where(Topic.slug == "kota-pekalongan"))
    assert topic is not None

    # A member changes nothing, whichever way they ask, and is told why, in the group's chat.
    for text in (
        "/langganan kota-pekalongan",
        "/start tkota-pekalongan",
        f"/kelurahan {code}",
        "/berhenti semua",
        "/hapus",
    ):
        assert await bot.say(GROUP, text, from_id=MEMBER) == [ADMINS_ONLY], text
    assert await bot.press(GROUP, f"s:{topic.id}", from_id=MEMBER) == [ADMINS_ONLY]
    assert await bot.say(GROUP, "/subscribe kota-pekalongan", from_id=VISITOR, language_code="en") == [
        ADMINS_ONLY_EN
    ]
    assert await group_state(hub) == (None, None)
    # Reading stays open to every member.
    (hours,) = await bot.say(GROUP, "/jam kota-pekalongan", from_id=MEMBER)
    assert hours.splitlines()[0:3:2] == HOURS

    # The creator registers the group with the code the member could not use ...
    assert await bot.say(GROUP, f"/kelurahan {code}", from_id=HEAD) == [
        "Grup ini terdaftar sebagai penerus informasi Dindukcapil Kota Pekalongan. Terima kasih."
    ]
    assert await group_state(hub) == ("confirmed", "kota-pekalongan")
    # ... a member still cannot end that ...
    assert await bot.say(GROUP, "/berhenti", from_id=MEMBER) == [ADMINS_ONLY]
    assert await group_state(hub) == ("confirmed", "kota-pekalongan")
    # ... an administrator can ...
    assert await bot.say(GROUP, "/berhenti", from_id=ADMIN) == ["Anda berhenti berlangganan semua topik."]
    assert await group_state(hub) == ("unsubscribed", "kota-pekalongan")
    # ... and asked again each time: demoted, the same person no longer can.
    fake.set_member(GROUP, ADMIN, "member")
    assert await bot.say(GROUP, "/langganan kota-pekalongan", from_id=ADMIN) == [ADMINS_ONLY]
    assert await group_state(hub) == ("unsubscribed", "kota-pekalongan")

    asked = {(c["chat_id"], c["user_id"]) for m, c in fake.calls if m == "getChatMember"}
    assert {(str(GROUP), str(user)) for user in (MEMBER, VISITOR, HEAD, ADMIN)} <= asked


async def test_an_anonymous_admin_may_and_an_unknown_sender_may_not(bot: Chat, fake: FakeTelegram) -> None:
    fake.add_group(GROUP, title="Kelurahan Panjang Wetan", supergroup=True, creator=HEAD)

    # Telegram could not say who wrote: nothing changes, and the member hears to try again.
    fake.force_error(400, "Bad Request: PARTICIPANT_ID_INVALID", method="getChatMember")
    assert await bot.say(GROUP, "/langganan kota-pekalongan", from_id=HEAD) == [
        "Maaf, saya belum dapat memastikan bahwa Anda admin grup ini. Coba lagi sebentar lagi."
    ]
    assert await group_state(bot.hub) == (None, None)

    # An anonymous administrator writes as the group itself: that alone proves the right.
    assert await bot.say(GROUP, "/langganan kota-pekalongan", anonymous=True) == [SUBSCRIBED]
    assert await group_state(bot.hub) == ("confirmed", None)
