"""Conversations with the citizens' bot, end to end: Telegram updates in through the hub's webhook route,
answers out through the outbox, the worker and the adapter to the loopback Bot API; state in the database.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import select

from hub import announcements, applicants, delivery, subscriptions
from hub.bot import relay_code
from hub.context import Hub
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.keys import create_key
from hub.store.models import CaseEndpoint, Endpoint, Subscription, Topic
from tests.fakes.telegram_api import FakeTelegram, eventually
from tests.integration.telegram.conftest import Chat

ALICE, BUDI, CITRA, DEWI = 820_001, 820_002, 820_003, 820_004
GROUP = -4_100_001


async def subscription_state(hub: Hub, chat: int | str, slug: str) -> str | None:
    async with hub.db.session() as session:
        return await session.scalar(
            select(Subscription.state)
            .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Endpoint.channel == "telegram", Endpoint.address == str(chat), Topic.slug == slug)
        )


async def endpoint(hub: Hub, chat: int | str) -> Endpoint | None:
    async with hub.db.session() as session:
        return await session.scalar(
            select(Endpoint).where(Endpoint.channel == "telegram", Endpoint.address == str(chat))
        )


async def publish(hub: Hub, title: str) -> int:
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": title, "text": "Isi pengumuman."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub, idle_checks=1)
    return message.id


# ---------------------------------------------------------------------------------------------------------


async def test_start_with_case_deep_link_links_the_case(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    fake.add_private(ALICE)
    key = await create_key(hub, "kota-pekalongan", "intake", "loket")
    opened = await bot.client.post(
        "/v1/applicants",
        headers={"Authorization": f"Bearer {key}"},
        json={"reference": "3375-KK-0001", "document": "KK"},
    )
    assert opened.status_code == 201, opened.text
    link = opened.json()["links"]["telegram"]
    code = opened.json()["link_code"]
    assert link == f"https://t.me/{fake.bot_username}?start={code}"

    # Tapping the link opens the bot, and Telegram sends "/start <payload>".
    replies = await bot.say(ALICE, "/start " + link.rsplit("=", 1)[1])
    assert replies == [
        "Permohonan KK 3375-KK-0001 terhubung. Status: diterima. Kabar berikutnya dikirim ke sini."
    ]
    person = await endpoint(hub, ALICE)
    assert person is not None
    async with hub.db.session() as session:
        assert await session.scalar(select(CaseEndpoint).where(CaseEndpoint.endpoint_id == person.id))

    # The next status change comes to the chat at once (urgent lane).
    await applicants.post_update(
        hub, "kota-pekalongan", "3375-KK-0001", applicants.UpdateInput(status="verified")
    )
    await drain(hub, idle_checks=1)
    update = fake.messages(ALICE)[-1].visible_text
    assert "3375-KK-0001" in update and "sudah diverifikasi" in update

    assert await bot.say(ALICE, "/start cTidakAdaKodeIni") == ["Kode tidak dikenal atau sudah dipakai."]


async def test_subscribe_with_inline_keyboard_then_unsubscribe(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    fake.add_private(BUDI)
    (choose,) = await bot.say(BUDI, "/langganan")
    assert choose.startswith("Pilih kantor:")
    offices = {b["text"]: b["callback_data"] for b in bot.buttons(BUDI)}
    assert offices["Dindukcapil Kota Pekalongan"] == "o:kota-pekalongan"

    (topics,) = await bot.press(BUDI, offices["Dindukcapil Kota Pekalongan"])
    assert topics == "Pilih topik dari Dindukcapil Kota Pekalongan:"
    choices = {b["text"]: b["callback_data"] for b in bot.buttons(BUDI)}
    assert {"Dindukcapil Kota Pekalongan", "Kartu Keluarga"} <= set(choices)
    assert await subscription_state(hub, BUDI, "kota-pekalongan") is None

    (done,) = await bot.press(BUDI, choices["Dindukcapil Kota Pekalongan"])
    assert done == "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim /berhenti untuk berhenti."
    assert await subscription_state(hub, BUDI, "kota-pekalongan") == "confirmed"
    assert len(fake.answered_callbacks) == 2  # both spinners stopped

    # A broadcast now reaches the chat ...
    await publish(hub, "Uji langganan")
    assert "Uji langganan" in fake.messages(BUDI)[-1].visible_text

    # ... and /berhenti stops it, in the database.
    assert await bot.say(BUDI, "/berhenti") == ["Anda berhenti berlangganan semua topik."]
    assert await subscription_state(hub, BUDI, "kota-pekalongan") == "unsubscribed"
    before = len(fake.messages(BUDI))
    await publish(hub, "Tidak untuk Budi")
    assert len(fake.messages(BUDI)) == before


async def test_hours_and_services_of_kota_pekalongan(bot: Chat, fake: FakeTelegram) -> None:
    fake.add_private(CITRA)
    (hours,) = await bot.say(CITRA, "/jam kota-pekalongan")
    # From the office's status (issue 11): today first (it depends on the day the test runs), then the week.
    lines = hours.splitlines()
    assert lines[0] == "Jam layanan Dindukcapil Kota Pekalongan:" and lines[1].startswith("Hari ini: ")
    assert lines[2] == "Senin–Kamis 08.00–11.00; Jumat 08.00–10.00 WIB"
    assert "kuota 50 orang" in lines[1] or lines[3:] == ["Kuota: 50 orang per hari."]
    (services,) = await bot.say(CITRA, "/layanan pekalongan")
    assert services.splitlines() == [
        "Layanan Dindukcapil Kota Pekalongan:",
        "- KK dan KTP-el: 0858-7031-0341 (WhatsApp)",
        "- pindah datang: 0857-1250-7533 (WhatsApp)",
        "- konfirmasi data: 0813-2684-6275 (WhatsApp)",
    ]

    # A newer structured announcement is what /jam answers from; a subscriber need not name the office.
    await subscriptions.subscribe(bot.hub, "kota-pekalongan", "telegram", str(CITRA), confirmed=True)
    req = announcements.AnnouncementInput(
        template="hours_changed",
        topics=["kota-pekalongan"],
        data={"hours": {"monday": "09:00-12:00"}, "daily_quota": 30},
    )
    await announcements.create(bot.hub, req, publish=False)  # a draft does not count
    (unchanged,) = await bot.say(CITRA, "/jam")
    assert "Senin–Kamis 08.00–11.00; Jumat 08.00–10.00 WIB" in unchanged
    await announcements.create(bot.hub, req, publish=True)
    await drain(bot.hub, idle_checks=1)
    (changed,) = await bot.say(CITRA, "/jam")
    assert changed.splitlines()[2] == "Senin 09.00–12.00 WIB" and "30 orang" in changed


async def test_track_is_private_and_rate_limited(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    case = await applicants.open_case(
        hub, "kota-pekalongan", applicants.CaseInput(reference="3375-KTP-0042", document="KTP-el")
    )
    wrong = "000000" if case.pin != "000000" else "111111"
    fake.add_private(DEWI)
    fake.add_private(ALICE)
    fake.add_group(GROUP, title="Warga RW 03")

    # In a group the bot never answers with a citizen's status: it asks for a private chat.
    assert await bot.say(GROUP, f"/lacak {case.reference} {case.pin}", from_id=DEWI) == [
        "Demi keamanan, kirim /lacak hanya lewat pesan pribadi kepada saya."
    ]
    assert await bot.say(DEWI, "/lacak") == ["Kirim /lacak KODE PIN, sesuai tanda terima permohonan Anda."]
    assert await bot.say(DEWI, f"/lacak {case.reference} {case.pin}") == [
        "Permohonan KTP-el 3375-KTP-0042: diterima. Anda akan menerima kabar berikutnya di sini."
    ]

    # Five wrong guesses, then even the right PIN is refused for a while.
    for _ in range(5):
        assert await bot.say(ALICE, f"/lacak {case.reference} {wrong}") == ["Kode atau PIN tidak cocok."]
    assert await bot.say(ALICE, f"/lacak {case.reference} {case.pin}") == [
        "Terlalu banyak percobaan. Coba lagi nanti."
    ]
    async with hub.db.session() as session:
        linked = set(
            (
                await session.execute(
                    select(Endpoint.address).join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
                )
            ).scalars()
        )
    assert linked == {str(DEWI)}  # neither the group nor the guesser


async def test_unknown_input_gets_a_short_help(bot: Chat, fake: FakeTelegram) -> None:
    fake.add_private(BUDI)
    fake.add_group(GROUP)
    (reply,) = await bot.say(BUDI, "halo, kantor buka jam berapa?")
    assert reply.startswith("Maaf, saya tidak mengerti.\nLayanan informasi Disdukcapil. Perintah:")
    assert "/jam - jam layanan dan kuota" in reply and len(reply) < 500
    (reply,) = await bot.say(BUDI, "/entahlah")
    assert reply.startswith("Maaf, saya tidak mengerti.")
    # A group's own chatter is not for the bot.
    assert await bot.say(GROUP, "selamat pagi semua", from_id=BUDI) == []


async def test_blocked_then_unblocked_user_can_subscribe_again(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    fake.add_private(CITRA)
    assert (await bot.say(CITRA, "/langganan kota-pekalongan"))[0].startswith("Anda berlangganan")
    fake.block(CITRA)
    first = await publish(hub, "Saat diblokir")
    person = await endpoint(hub, CITRA)
    assert person is not None and not person.active
    assert (await delivery.status(hub, first))["totals"]["gone"] == 1  # type: ignore[index]
    await publish(hub, "Tetap tidak dicoba")
    assert len([e for e in fake.errors_for() if e[0] == 403]) == 1  # never tried again

    fake.unblock(CITRA)
    assert (await bot.say(CITRA, "/langganan kota-pekalongan"))[0].startswith("Anda berlangganan")
    person = await endpoint(hub, CITRA)
    assert person is not None and person.active
    await publish(hub, "Setelah kembali")
    assert "Setelah kembali" in fake.messages(CITRA)[-1].visible_text


async def test_kelurahan_group_registers_with_a_one_time_code(bot: Chat, fake: FakeTelegram) -> None:
    hub = bot.hub
    fake.add_group(GROUP, title="Kelurahan Kraton Kidul", creator=DEWI)
    code = await relay_code(hub, "kota-pekalongan")

    # The admin adds the bot; it says how to register.
    (hello,) = await bot.deliver(fake.inject_my_chat_member(GROUP, "member", from_id=DEWI), GROUP)
    assert "/kelurahan KODE" in hello
    assert await bot.deliver(fake.inject_new_chat_members(GROUP, from_id=DEWI), GROUP) == []  # said once

    assert await bot.say(GROUP, f"/kelurahan@{fake.bot_username} {code}", from_id=DEWI) == [
        "Grup ini terdaftar sebagai penerus informasi Dindukcapil Kota Pekalongan. Terima kasih."
    ]
    group = await endpoint(hub, GROUP)
    assert group is not None and group.kind == "group" and group.relay_office_id == "kota-pekalongan"
    assert await subscription_state(hub, GROUP, "kota-pekalongan") == "confirmed"
    assert await bot.say(GROUP, f"/kelurahan {code}", from_id=DEWI) == [
        "Kode tidak dikenal atau sudah dipakai."
    ]

    await publish(hub, "Untuk diteruskan ke RT/RW")
    assert "Untuk diteruskan ke RT/RW" in fake.messages(GROUP)[-1].visible_text


async def test_webhook_with_a_wrong_secret_is_refused(bot: Chat, fake: FakeTelegram) -> None:
    fake.add_private(ALICE)
    update = fake.inject_message(ALICE, "/bantuan")
    for secret in ("salah", None):
        response = await bot.post(update, secret=secret)
        assert response.status_code == 403
    await drain(bot.hub, idle_checks=1)
    assert fake.messages(ALICE) == []
    assert await endpoint(bot.hub, ALICE) is None  # nothing was stored either


async def test_english_for_an_english_telegram_user(bot: Chat, fake: FakeTelegram) -> None:
    fake.add_private(BUDI, language_code="en")
    (help_text,) = await bot.say(BUDI, "/help")
    assert help_text.startswith("Disdukcapil information service. Commands:")
    (hours,) = await bot.say(BUDI, "/jam kota-pekalongan")
    assert hours.splitlines()[0] == "Service hours of Dindukcapil Kota Pekalongan:"
    assert hours.splitlines()[1].startswith("Today: ")
    assert hours.splitlines()[2] == "Monday–Thursday 08:00–11:00; Friday 08:00–10:00 WIB"
    assert "quota 50 people" in hours or hours.splitlines()[-1] == "Quota: 50 people a day."
    (done,) = await bot.say(BUDI, "/langganan kota-pekalongan")
    assert done == "You are subscribed to: Dindukcapil Kota Pekalongan. Send /berhenti to stop."


async def test_long_polling_answers_too(tg_hub: Hub, fake: FakeTelegram) -> None:
    """Offices without a public address poll getUpdates; the answers are the same."""
    fake.add_private(DEWI)
    channel = await tg_hub.open_channel("telegram")
    listener = asyncio.create_task(channel.listen(lambda record: handle_inbound(tg_hub, record)))
    try:
        fake.inject_message(DEWI, "/jam kota-pekalongan")
        for _ in range(50):
            await drain(tg_hub, idle_checks=1)
            if fake.messages(DEWI):
                break
        assert fake.messages(DEWI)[0].visible_text.startswith("Jam layanan Dindukcapil Kota Pekalongan:")
        await eventually(lambda: not fake.pending_updates())  # confirmed by the next getUpdates offset
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def test_webhook_route_rejects_other_channels(bot: Chat) -> None:
    response = await bot.client.post("/v1/channels/nonexistent/webhook", json={})
    assert response.status_code == 404
