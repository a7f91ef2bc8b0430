"""The citizens' bot on Matrix, end to end: people write in real rooms on Synapse; the adapter's ``listen``
hands each message to ``hub.inbound.handle_inbound`` (the one implementation of every command); the hub
queues its answers, ``hub.delivery.drain`` sends them through the adapter, and the people read them back.
State changes are checked in the database.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from hub import announcements, applicants
from hub.bot import relay_code
from hub.context import Hub
from hub.store.models import CaseEndpoint, Endpoint, Subscription, Topic
from tests.conftest import start_hub
from tests.integration.matrix.conftest import (
    Listening,
    bot_bodies,
    matrix_conf,
    matrix_settings,
    wait_until,
)
from tests.services.synapse import MatrixUser, NewUser, Person, SynapseServer

#: The first and third lines of ``!jam`` (the second is today's, which depends on the day the test runs).
HOURS = ["Jam layanan Dindukcapil Kota Pekalongan:", "Senin–Kamis 08.00–11.00; Jumat 08.00–10.00 WIB"]
SERVICES = [
    "Layanan Dindukcapil Kota Pekalongan:",
    "- KK dan KTP-el: 0858-7031-0341 (WhatsApp)",
    "- pindah datang: 0857-1250-7533 (WhatsApp)",
    "- konfirmasi data: 0813-2684-6275 (WhatsApp)",
]


class Conversation:
    """One person talking to the bot in one room."""

    def __init__(self, listening: Listening, person: Person, room_id: str, bot_id: str) -> None:
        self.listening, self.person, self.room_id, self.bot_id = listening, person, room_id, bot_id

    async def bot_says(self, room_id: str | None = None) -> list[str]:
        return [body for _, body in await bot_bodies(self.person, room_id or self.room_id, self.bot_id)]

    async def ask(self, text: str) -> list[str]:
        """Say ``text``, let the hub answer and send, return what the bot said here since."""
        before = len(await self.bot_says())
        event_id = await self.person.say(self.room_id, text)
        await self.listening.handled_event(event_id)
        await self.listening.settle()
        return (await self.bot_says())[before:]


async def bot_joined(person: Person, room_id: str, bot_id: str) -> None:
    async def joined() -> bool:
        return await person.membership(room_id, bot_id) == "join"

    await wait_until(joined, 20, f"the bot to join {room_id}")


async def subscription_state(hub: Hub, address: str, slug: str = "kota-pekalongan") -> str | None:
    async with hub.db.session() as session:
        return await session.scalar(
            select(Subscription.state)
            .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Endpoint.channel == "matrix", Endpoint.address == address, Topic.slug == slug)
        )


# ---------------------------------------------------------------------------------------------------------


async def test_commands_in_a_direct_chat_change_subscriptions(
    mx_hub: Hub, listening: Listening, new_user: NewUser, bot: MatrixUser
) -> None:
    citra = await new_user("citra")
    # Citra opens a direct chat with the bot, as Element's "Start chat" does; it accepts by itself.
    room_id = await citra.create_room(invite=[bot.user_id], is_direct=True)
    await bot_joined(citra, room_id, bot.user_id)
    chat = Conversation(listening, citra, room_id, bot.user_id)

    assert await chat.ask("!langganan kota-pekalongan") == [
        "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim !berhenti untuk berhenti."
    ]
    assert await subscription_state(mx_hub, citra.user_id) == "confirmed"

    (hours,) = await chat.ask("!jam kota-pekalongan")
    assert hours.splitlines()[0:3:2] == HOURS and hours.splitlines()[1].startswith("Hari ini: ")
    (services,) = await chat.ask("!layanan")  # a subscriber of one office need not name it
    assert services.splitlines() == SERVICES
    (english,) = await chat.ask("!hours")
    assert english.splitlines()[0] == "Service hours of Dindukcapil Kota Pekalongan:"

    (help_id,) = await chat.ask("!bantuan")
    assert help_id.startswith("Layanan informasi Disdukcapil. Perintah:")
    assert "!lacak KODE PIN - status permohonan Anda" in help_id
    (help_en,) = await chat.ask("!help")
    assert help_en.startswith("Disdukcapil information service. Commands:")
    (unknown,) = await chat.ask("kantor buka jam berapa?")
    assert unknown.startswith("Maaf, saya tidak mengerti.")

    # A broadcast reaches her; !berhenti stops that, in the database.
    await publish(mx_hub, listening, "Uji langganan Matrix")
    assert "Uji langganan Matrix" in (await chat.bot_says())[-1]
    assert await chat.ask("!berhenti") == ["Anda berhenti berlangganan semua topik."]
    assert await subscription_state(mx_hub, citra.user_id) == "unsubscribed"
    before = len(await chat.bot_says())
    await publish(mx_hub, listening, "Tidak untuk Citra")
    assert len(await chat.bot_says()) == before

    async with mx_hub.db.session() as session:
        endpoint = await session.scalar(select(Endpoint).where(Endpoint.address == citra.user_id))
    assert endpoint is not None and endpoint.kind == "person" and endpoint.active


async def test_track_in_a_shared_room_is_answered_in_a_direct_message(
    mx_hub: Hub, listening: Listening, new_user: NewUser, bot: MatrixUser
) -> None:
    case = await applicants.open_case(
        mx_hub, "kota-pekalongan", applicants.CaseInput(reference="3375-KTP-0042", document="KTP-el")
    )
    humas, dewi = await new_user("humas"), await new_user("dewi")
    group = await humas.create_room(name="Warga RW 05 Kraton Kidul", invite=[dewi.user_id, bot.user_id])
    await dewi.join(group)
    await bot_joined(humas, group, bot.user_id)
    await listening.handled_kind("member", group)  # "added": the bot introduces itself to the group
    await listening.settle()
    in_group = Conversation(listening, dewi, group, bot.user_id)

    assert await in_group.ask(f"!lacak {case.reference} {case.pin}") == [
        "Saya akan menjawab lewat pesan pribadi."
    ]
    # The answer is in a direct room the bot opened with Dewi, and nowhere else.
    [direct] = await dewi.rooms_with(bot.user_id)
    assert direct != group
    assert await in_group.bot_says(direct) == [
        "Permohonan KTP-el 3375-KTP-0042: diterima. Anda akan menerima kabar berikutnya di sini."
    ]
    assert not any(case.pin in body for body in await in_group.bot_says())

    # Dewi's own endpoint is linked to the case, not the group: the next status change comes to her DM.
    async with mx_hub.db.session() as session:
        linked = set(
            (
                await session.execute(
                    select(Endpoint.address).join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
                )
            ).scalars()
        )
    assert linked == {dewi.user_id}
    await applicants.post_update(
        mx_hub, "kota-pekalongan", case.reference, applicants.UpdateInput(status="verified")
    )
    await listening.settle()
    update = (await in_group.bot_says(direct))[-1]
    assert "3375-KTP-0042" in update and "diverifikasi" in update

    # In the direct room itself, !lacak is answered right there; a wrong PIN is refused.
    in_direct = Conversation(listening, dewi, direct, bot.user_id)
    assert await in_direct.ask(f"!lacak {case.reference} 000000") == ["Kode atau PIN tidak cocok."]
    assert await in_direct.ask("!track") == ["Send !lacak CODE PIN as printed on your application receipt."]


async def test_kelurahan_room_registers_with_a_one_time_code(
    mx_hub: Hub, listening: Listening, new_user: NewUser, bot: MatrixUser
) -> None:
    admin = await new_user("admin-kelurahan")
    room_id = await admin.create_room(name="Kelurahan Kraton Kidul", invite=[bot.user_id])
    await bot_joined(admin, room_id, bot.user_id)  # invited from an allowed server: accepted
    added = await listening.handled_kind("member", room_id)
    assert added.chat_kind == "group"  # only two members, but a named room: a group, not a person
    await listening.settle()
    room = Conversation(listening, admin, room_id, bot.user_id)
    assert await room.bot_says() == [
        "Terima kasih telah menambahkan saya. Admin kelurahan: kirim !kelurahan KODE dari Disdukcapil."
    ]

    code = await relay_code(mx_hub, "kota-pekalongan")
    assert await room.ask(f"!kelurahan {code}") == [
        "Grup ini terdaftar sebagai penerus informasi Dindukcapil Kota Pekalongan. Terima kasih."
    ]
    async with mx_hub.db.session() as session:
        endpoint = await session.scalar(select(Endpoint).where(Endpoint.address == room_id))
    assert endpoint is not None
    assert (endpoint.kind, endpoint.relay_office_id) == ("group", "kota-pekalongan")
    assert await subscription_state(mx_hub, room_id) == "confirmed"
    assert await room.ask(f"!kelurahan {code}") == ["Kode tidak dikenal atau sudah dipakai."]

    await publish(mx_hub, listening, "Untuk diteruskan ke RT/RW")
    assert "Untuk diteruskan ke RT/RW" in (await room.bot_says())[-1]


async def test_invites_from_servers_not_allowed_are_declined(
    sqlite_database: tuple[str, str | None],
    redis_url: str,
    synapse: SynapseServer,
    bot: MatrixUser,
    new_user: NewUser,
    tmp_path: Path,
) -> None:
    conf = matrix_conf(synapse.base_url, bot, tmp_path / "store", allowed_servers=["kemendagri.go.id"])
    hub = await start_hub(matrix_settings(sqlite_database, redis_url, conf))
    bot_loop = Listening(hub)
    try:
        await bot_loop.start()
        stranger = await new_user("asing")
        room_id = await stranger.create_room(name="Bukan kelurahan", invite=[bot.user_id])

        async def declined() -> bool:
            return await stranger.membership(room_id, bot.user_id) == "leave"

        await wait_until(declined, 20, "the bot to decline the invite")
        assert bot_loop.handled == []  # nothing reached the hub
    finally:
        await bot_loop.stop()
        await hub.close()


async def publish(hub: Hub, listening: Listening, title: str) -> None:
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": title, "text": "Isi pengumuman."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await listening.settle()
