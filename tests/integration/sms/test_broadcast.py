"""Broadcasts through the hub into a real Kannel: each number once, in the parts the hub predicted.

What the SMSC received is read back from fakesmsc; delivery reports come back from Kannel to the hub's own
webhook route (uvicorn) and move the deliveries to ``delivered``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from channels.sms.segments import analyze
from hub import announcements, delivery, subscriptions
from hub.delivery import drain
from hub.store.models import Delivery, Endpoint, Rendering
from tests.services.kannel import Kannel

from .conftest import SENDER, FlakyFront, HubFactory, assemble, smsc_messages, wait_for, wait_smsc

PEKALONGAN_HOURS = {
    "hours": {
        "monday": "08:00-11:00",
        "tuesday": "08:00-11:00",
        "wednesday": "08:00-11:00",
        "thursday": "08:00-11:00",
        "friday": "08:00-10:00",
    },
    "daily_quota": 50,
    "health_protocol": ["jaga jarak saat antre", "cuci tangan", "wajib masker", "cek suhu di pintu"],
}


def mixed_formats(count: int, start: int = 0) -> list[tuple[str, str]]:
    """``count`` made-up Telkomsel-style numbers, each written one of five ways, with its E.164 form."""
    out = []
    for i in range(start, start + count):
        national = f"81234{i:06d}"  # 0812-34xx-xxxx
        written = [
            f"0{national}",
            f"+62{national}",
            f"62{national}",
            f"0{national[:3]}-{national[3:7]}-{national[7:]}",
            f"+62 {national[:3]} {national[3:7]} {national[7:]}",
        ][i % 5]
        out.append((written, f"+62{national}"))
    return out


async def rendered_text(hub, message_id: int, locale: str = "id") -> str:
    async with hub.db.session() as session:
        text = await session.scalar(
            select(Rendering.text).where(
                Rendering.message_id == message_id, Rendering.channel == "sms", Rendering.locale == locale
            )
        )
    assert text is not None
    return text


async def wait_delivered(hub, message_id: int, count: int, timeout: float = 10.0) -> dict:
    async def check() -> dict | None:
        status = await delivery.status(hub, message_id)
        return status if status and status["totals"]["delivered"] == count else None

    try:
        return await wait_for(check, timeout=timeout, what=f"{count} delivery reports")
    except AssertionError:
        raise AssertionError(f"delivery reports missing: {await delivery.status(hub, message_id)}") from None


async def test_broadcast_to_300_mixed_format_numbers(make_sms_hub: HubFactory) -> None:
    sms = await make_sms_hub()
    hub = sms.hub
    numbers = mixed_formats(300)
    for written, _ in numbers:
        await subscriptions.subscribe(hub, "kota-pekalongan", "sms", written, confirmed=True)
    # The same people again, written another way: still one endpoint each.
    for _, e164 in numbers[:20]:
        national = e164[3:]
        again = f"(0{national[:3]}) {national[3:7]}.{national[7:]}"
        await subscriptions.subscribe(hub, "kota-pekalongan", "sms", again, confirmed=True)
    with pytest.raises(subscriptions.SubscriptionError, match="landline"):
        await subscriptions.subscribe(hub, "kota-pekalongan", "sms", "(0285) 421-093", confirmed=True)
    async with hub.db.session() as session:
        stored = set(
            (await session.execute(select(Endpoint.address).where(Endpoint.channel == "sms"))).scalars()
        )
    expected = {e164 for _, e164 in numbers}
    assert stored == expected

    req = announcements.AnnouncementInput(
        template="hours_changed", topics=["kota-pekalongan"], data=PEKALONGAN_HOURS
    )
    # Dry run: what each recipient costs, and the whole audience.
    preview = await announcements.preview(hub, req)
    entry = preview["channels"]["sms"]
    facts = entry["renderings"]["id"]
    assert entry["recipients"] == facts["recipients"] == 300 and facts["encoding"] == "GSM-7"
    predicted = facts["segments"]
    assert predicted == analyze(facts["text"]).segments == 2, facts["text"]
    assert facts["total_segments"] == 300 * predicted  # what the audience costs

    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub)

    text = await rendered_text(hub, message.id)
    assert text == facts["text"] and "Senin-Kamis 08.00-11.00, Jumat 08.00-10.00 WIB" in text
    await wait_smsc(sms.kannel, 300 * predicted)
    parts = smsc_messages(sms.kannel)
    assert len(parts) == 300 * predicted
    assert {p.receiver for p in parts} == expected and {p.sender for p in parts} == {SENDER}
    for receiver in expected:
        assert assemble([p for p in parts if p.receiver == receiver]) == [(text, predicted)], receiver

    status = await wait_delivered(hub, message.id, 300)
    assert status["total"] == 300 and status["done"]


async def test_ucs2_with_emoji_is_split_and_counted(make_sms_hub: HubFactory) -> None:
    sms = await make_sms_hub()
    hub = sms.hub
    people = mixed_formats(3, start=500)
    for written, _ in people:
        await subscriptions.subscribe(hub, "kota-sukabumi", "sms", written, confirmed=True)
    note = "📢 Pengambilan dokumen hanya pukul 08.00-11.00. Permohonan baru lewat WhatsApp 08.00-15.00."
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-sukabumi"], data={"title": "Layanan terpusat", "text": note}
    )
    preview = await announcements.preview(hub, req)
    facts = preview["channels"]["sms"]["renderings"]["id"]
    assert facts["recipients"] == 3 and facts["total_segments"] == 3 * facts["segments"]
    units = len(facts["text"].encode("utf-16-be")) // 2
    assert facts["encoding"] == "UCS-2" and units > 134  # more than two 67-unit parts
    assert facts["segments"] == -(-units // 67) == 3

    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub)

    text = await rendered_text(hub, message.id)
    await wait_smsc(sms.kannel, 3 * facts["segments"])
    parts = smsc_messages(sms.kannel)
    for _, e164 in people:
        mine = [p for p in parts if p.receiver == e164]
        assert len(mine) == facts["segments"]
        refs = {p.concat for p in mine}
        assert all(c is not None and c[1] == facts["segments"] for c in refs)
        assert sorted(c[2] for c in refs if c) == [1, 2, 3]
        assert assemble(mine, ucs2=True) == [(text, facts["segments"])]
    await wait_delivered(hub, message.id, 3)


async def test_gateway_answering_503_is_retried_until_it_completes(
    make_sms_hub: HubFactory, kannel: Kannel, flaky_front: FlakyFront
) -> None:
    # Kannel's sendsms behind a front that answers its "503 Temporal failure" to the first 8 calls.
    gateway = kannel.gateway_settings(name="flaky-kannel", url=flaky_front.url, rate_per_second=10_000)
    sms = await make_sms_hub([gateway])
    hub = sms.hub
    people = mixed_formats(12, start=700)
    for written, _ in people:
        await subscriptions.subscribe(hub, "kota-pekalongan", "sms", written, confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text",
        topics=["kota-pekalongan"],
        data={"title": "Libur nasional", "text": "Kantor tutup 1 Mei. Layanan daring tetap buka."},
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub)

    assert flaky_front.refused == flaky_front.failures == 8
    assert flaky_front.passed == 12  # each recipient went through exactly once after the 503s
    await wait_smsc(sms.kannel, 12)
    parts = smsc_messages(sms.kannel)
    assert sorted(p.receiver for p in parts) == sorted(e164 for _, e164 in people)
    text = await rendered_text(hub, message.id)
    assert {tuple(assemble([p])) for p in parts} == {((text, 1),)}
    async with hub.db.session() as session:
        spent = await session.scalar(
            select(func.max(Delivery.attempts)).where(Delivery.message_id == message.id)
        )
    assert spent == 1  # the gateway's 503s were its trouble: they cost no delivery an attempt
    await wait_delivered(hub, message.id, 12)
