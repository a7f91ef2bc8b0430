"""Keywords from phones, end to end: fakesmsc -> Kannel -> sms-service get-url -> the hub's webhook route ->
the one command implementation in hub/bot/ -> a reply on the urgent lane -> Kannel -> fakesmsc."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from channels.sms.numbers import normalize_msisdn
from channels.sms.segments import analyze
from hub import applicants
from hub.store.models import CaseEndpoint, Endpoint, Subscription, Topic

from .conftest import HubFactory, SmsHub, assemble, smsc_messages


class Phone:
    """A citizen's phone: texts go in through fakesmsc, the hub's replies are read back there."""

    def __init__(self, sms: SmsHub, written: str) -> None:
        self.sms, self.written, self.number = sms, written, normalize_msisdn(written)

    def inbox(self) -> list[str]:
        return [text for text, _ in assemble(smsc_messages(self.sms.kannel, self.number))]

    async def wait_inbox(self, count: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.inbox()) < count:
            if self.sms.workers is not None:
                self.sms.workers.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.number} has {self.inbox()} after {timeout}s, expected {count}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the rest of a multi-line text, or a second reply that should not come
        return self.inbox()

    async def say(self, text: str) -> str:
        """Send ``text`` and return the one reply it gets."""
        before = len(self.inbox())
        self.sms.kannel.inject_mo(self.written, text)
        inbox = await self.wait_inbox(before + 1)
        assert len(inbox) == before + 1, f"one reply expected to {text!r}, got {inbox[before:]}"
        return inbox[-1]


async def subscriptions_of(sms: SmsHub, number: str) -> dict[str, str]:
    async with sms.hub.db.session() as session:
        rows = await session.execute(
            select(Topic.slug, Subscription.state)
            .join(Subscription, Subscription.topic_id == Topic.id)
            .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
            .where(Endpoint.channel == "sms", Endpoint.address == number)
        )
        return dict(rows.all())


async def test_daftar_jam_berhenti_and_unknown_text(make_sms_hub: HubFactory) -> None:
    sms = await make_sms_hub(workers=True)
    phone = Phone(sms, "0812-3400-9001")

    reply = await phone.say("DAFTAR kota-pekalongan")
    assert reply == "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim berhenti untuk berhenti."
    assert await subscriptions_of(sms, phone.number) == {"kota-pekalongan": "confirmed"}

    # Subscribed to one office: JAM needs no office name. The hours' dashes went out as GSM-7 "-".
    reply = await phone.say("jam")
    assert reply.startswith("Jam layanan Dindukcapil Kota Pekalongan:\nHari ini: ")
    assert "\nSenin-Kamis 08.00-11.00; Jumat 08.00-10.00 WIB" in reply and "50 orang" in reply
    assert analyze(reply).encoding == "GSM-7" and analyze(reply).segments == 1

    reply = await phone.say("BERHENTI")
    assert reply == "Anda berhenti berlangganan semua topik."
    assert await subscriptions_of(sms, phone.number) == {"kota-pekalongan": "unsubscribed"}

    reply = await phone.say("Halo, kapan KTP saya jadi?")
    assert reply.startswith("Maaf, saya tidak mengerti.\n")
    assert "lacak KODE PIN" in reply and "berhenti" in reply
    assert analyze(reply).segments <= 3

    # Another phone, English keyword and an office named in the message.
    other = Phone(sms, "+6281234009002")  # fakesmsc splits its input at spaces
    reply = await other.say("HOURS kota-pekalongan")
    assert reply.startswith("Service hours of Dindukcapil Kota Pekalongan:\nToday: ")
    assert "\nMonday-Thursday 08:00-11:00; Friday 08:00-10:00 WIB" in reply
    # STOP from someone subscribed to two topics: SMS has no buttons, so it leaves everything.
    await other.say("daftar kota-pekalongan")
    await other.say("Daftar kota-pekalongan/kk")
    assert set((await subscriptions_of(sms, other.number)).values()) == {"confirmed"}
    assert await other.say("STOP") == "Anda berhenti berlangganan semua topik."
    assert set((await subscriptions_of(sms, other.number)).values()) == {"unsubscribed"}


async def test_lacak_links_the_case_and_status_updates_follow_by_sms(make_sms_hub: HubFactory) -> None:
    sms = await make_sms_hub(workers=True)
    hub = sms.hub
    case = await applicants.open_case(
        hub, "kota-pekalongan", applicants.CaseInput(reference="KK-2020-0042", document="KK")
    )
    phone = Phone(sms, "6281234009010")
    wrong = "000000" if case.pin != "000000" else "111111"
    assert await phone.say(f"LACAK KK-2020-0042 {wrong}") == "Kode atau PIN tidak cocok."
    async with hub.db.session() as session:
        assert (await session.execute(select(CaseEndpoint))).all() == []

    reply = await phone.say(f"LACAK KK-2020-0042 {case.pin}")
    assert reply == ("Permohonan KK KK-2020-0042: diterima. Anda akan menerima kabar berikutnya di sini.")
    async with hub.db.session() as session:
        linked = (
            (
                await session.execute(
                    select(Endpoint.address)
                    .join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
                    .where(CaseEndpoint.case_id == case.case_id)
                )
            )
            .scalars()
            .all()
        )
    assert linked == [phone.number]

    # The office posts a status change: the linked phone hears it, in the short SMS rendering.
    await applicants.post_update(
        hub,
        "kota-pekalongan",
        "KK-2020-0042",
        applicants.UpdateInput(status="ready", pickup_place="loket 3", pickup_hours="08:00-11:00"),
    )
    inbox = await phone.wait_inbox(3)
    assert inbox[-1] == (
        "Dindukcapil Kota Pekalongan: permohonan KK KK-2020-0042 siap diambil di loket 3 "
        "(08.00-11.00 WIB). Bawa tanda terima."
    )
