# Fixtures come from the Telegram, SMS and CLI tests' modules; arguments named after them are them.
# ruff: noqa: F811
"""A citizen's data (UU 27/2022): ``/dataku`` shows all that is held, ``/hapus`` (``HAPUS``) confirms and
then erases it from every table, and staff export or erase an address on a letter; each recorded.

Telegram through the loopback Bot API, SMS through a real Kannel, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date
from sqlalchemy import func, select, update

from channels.sms.segments import analyze
from hub import announcements, applicants, citizens, delivery, subscriptions
from hub.context import Hub
from hub.delivery import drain
from hub.store.models import (
    ApplicantCase,
    Base,
    CitizenRequest,
    Delivery,
    Endpoint,
    Message,
    Subscription,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.sms.conftest import HubFactory, api_port, kannel, make_sms_hub  # noqa: F401
from tests.integration.sms.test_keywords import Phone
from tests.integration.telegram.conftest import Chat, bot, tg_hub  # noqa: F401
from tests.integration.test_cli import cli, prepared_db  # noqa: F401

CHAT = 987_654_321


def today(locale: str = "id") -> str:
    """How ``/dataku`` names today (on Jakarta's calendar)."""
    day = datetime.now(ZoneInfo("Asia/Jakarta")).date()
    return format_date(day, "d MMM yyyy", locale="id_ID" if locale == "id" else "en_GB")


async def holding(hub: Hub, *needles: str) -> dict[str, list[Any]]:
    """Every row of every table in which any of ``needles`` appears, by table."""
    found: dict[str, list[Any]] = {}
    async with hub.db.session() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            hits = [tuple(r) for r in rows if any(n in str(v) for v in r for n in needles)]
            if hits:
                found[table.name] = hits
    return found


async def requests(hub: Hub) -> list[tuple[Any, ...]]:
    async with hub.db.session() as session:
        rows = await session.scalars(select(CitizenRequest).order_by(CitizenRequest.id))
        return [
            (r.action, r.actor, r.channel, r.address_mask, r.address_hash, r.endpoint_id, r.detail)
            for r in rows
            if r.done_at is not None
        ]


async def erased(hub: Hub, timeout: float = 15.0) -> None:
    """Run the reconciler (as a worker's cron does) until every erasure asked in a chat is done."""
    deadline = time.monotonic() + timeout
    while True:
        await delivery.reconcile({"hub": hub})
        async with hub.db.session() as session:
            waiting = await session.scalar(select(CitizenRequest.id).where(CitizenRequest.done_at.is_(None)))
        if waiting is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError("an erasure is still waiting for its reply")
        await asyncio.sleep(0.1)


async def publish(hub: Hub, title: str) -> int:
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": title, "text": "Isi pengumuman."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    await drain(hub, idle_checks=1)
    return message.id


# ---------------------------------------------------------------------------------------------------------
# Telegram


async def test_telegram_dataku_then_hapus_replies_and_erases_every_trace(
    bot: Chat, fake: FakeTelegram
) -> None:
    hub = bot.hub
    fake.add_private(CHAT)
    assert await bot.say(CHAT, "/langganan kota-pekalongan") == [
        "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim /berhenti untuk berhenti."
    ]
    opened = await applicants.open_case(
        hub, "kota-pekalongan", applicants.CaseInput(reference="3375-KK-0099", document="KK")
    )
    (linked,) = await bot.say(CHAT, f"/start {opened.link_code}")
    assert linked.startswith("Permohonan KK 3375-KK-0099 terhubung.")
    announced = await publish(hub, "Pengumuman untuk semua")
    assert "Pengumuman untuk semua" in fake.messages(CHAT)[-1].visible_text

    day = today()
    assert await bot.say(CHAT, "/dataku") == [
        "Data Anda yang kami simpan:\n"
        f"Alamat Telegram: 98***21, sejak {day}. Bahasa: Indonesia.\n"
        "Langganan:\n"
        f"- Dindukcapil Kota Pekalongan (kota-pekalongan): aktif, sejak {day}\n"
        "Permohonan yang terhubung:\n"
        f"- KK 3375-KK-0099: diterima, diajukan {day}\n"
        "Kirim /hapus untuk menghapus semuanya."
    ]
    before = await delivery.status(hub, announced)
    assert before is not None and before["totals"]["sent"] == 1

    # The confirmation reaches the chat ...
    assert await bot.say(CHAT, "/hapus") == [
        "Data Anda dihapus: alamat ini, langganan, dan tautan ke permohonan. Anda tidak akan menerima "
        "pesan lagi dari kami."
    ]
    await erased(hub)
    # ... and then nothing of the address is left anywhere, while the announcement's counts stay.
    assert await holding(hub, str(CHAT)) == {}
    after = await delivery.status(hub, announced)
    assert after is not None and after["totals"] == before["totals"] and after["total"] == 1
    assert await requests(hub) == [
        (
            "erase",
            "citizen",
            "telegram",
            "98***21",
            citizens.address_hash(hub, "telegram", str(CHAT)),
            None,
            {
                "endpoints": 1,
                "subscriptions": 1,
                "case_links": 1,
                "replies": 4,  # /langganan, /start, /dataku, /hapus: said to this chat alone
                "deliveries": 1,  # the announcement's, counted on the message
            },
        )
    ]
    # The case itself is the office's: it stays, linked to no chat.
    async with hub.db.session() as session:
        kinds = sorted((await session.scalars(select(Message.kind))).all())
    assert kinds == ["announcement"]

    # An announcement now reaches no one, and the chat hears nothing more.
    seen = len(fake.messages(CHAT))
    await publish(hub, "Tidak untuk siapa pun")
    assert len(fake.messages(CHAT)) == seen


async def test_an_announcement_queued_before_hapus_is_not_sent_after_it(
    bot: Chat, fake: FakeTelegram
) -> None:
    hub = bot.hub
    fake.add_private(CHAT)
    await bot.say(CHAT, "/langganan kota-pekalongan")
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-pekalongan"], data={"title": "Nanti", "text": "Isi."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    # Planned, not yet sent: the erasure skips it, and only the confirmation goes out.
    await delivery.plan_message({"hub": hub}, message.id)
    assert await bot.say(CHAT, "/erase") == [
        "Your data is erased: this address, your subscriptions and links to applications. You will "
        "receive no more messages from us."
    ]
    await erased(hub)
    assert await holding(hub, str(CHAT)) == {}
    status = await delivery.status(hub, message.id)
    assert status is not None and status["totals"]["skipped"] == 1 and status["done"]


# ---------------------------------------------------------------------------------------------------------
# SMS


async def test_sms_dataku_fits_one_sms_and_hapus_erases(make_sms_hub: HubFactory) -> None:
    sms = await make_sms_hub(workers=True)
    phone = Phone(sms, "0812-3400-9555")
    assert await phone.say("DAFTAR kota-pekalongan") == (
        "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim berhenti untuk berhenti."
    )
    reply = await phone.say("DATAKU")
    assert reply == (
        f"Data Anda: SMS +62*******555 sejak {today()}, bahasa Indonesia. Langganan: kota-pekalongan "
        "(aktif). Permohonan: tidak ada. Kirim hapus untuk menghapus."
    )
    assert analyze(reply).segments == 1

    assert await phone.say("HAPUS") == (
        "Data Anda dihapus: alamat ini, langganan, dan tautan ke permohonan. Anda tidak akan menerima "
        "pesan lagi dari kami."
    )
    await erased(sms.hub)
    assert await holding(sms.hub, phone.number, phone.number[3:]) == {}
    assert await requests(sms.hub) == [
        (
            "erase",
            "citizen",
            "sms",
            "+62*******555",
            citizens.address_hash(sms.hub, "sms", phone.number),
            None,
            {"endpoints": 1, "subscriptions": 1, "case_links": 0, "replies": 3, "deliveries": 0},
        )
    ]


# ---------------------------------------------------------------------------------------------------------
# Staff, on a letter


async def test_export_gives_everything_held_and_is_recorded(hub: Hub) -> None:
    address = "warga.ekspor@mail.example.com"
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", address, confirmed=True)
    await subscriptions.subscribe(hub, "kota-pekalongan/kk", "email", address, locale="id")
    await applicants.open_case(
        hub,
        "kota-pekalongan",
        applicants.CaseInput(
            reference="3375-KTP-0007", document="KTP-el", contacts=[{"channel": "email", "address": address}]
        ),
    )
    await publish(hub, "Untuk pelanggan")
    iso = lambda value: value.isoformat() + "Z"  # noqa: E731
    async with hub.db.session() as session:
        endpoint = await session.scalar(select(Endpoint))
        assert endpoint is not None
        times = [
            iso(t) for t in await session.scalars(select(Subscription.created_at).order_by(Subscription.id))
        ]
        case_at = iso(await session.scalar(select(ApplicantCase.created_at)))
        first, last = (
            await session.execute(select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)))
        ).one()

    data = await citizens.export(hub, " Warga.Ekspor@mail.example.com ", actor="Petugas A (surat 12/2026)")
    assert data == {
        "endpoints": [
            {
                "channel": "email",
                "address": address,
                "kind": "person",
                "locale": "id",
                "active": True,
                "deactivated_reason": None,
                "created_at": iso(endpoint.created_at),
                "subscriptions": [
                    {
                        "topic": "kota-pekalongan",
                        "topic_name": "Dindukcapil Kota Pekalongan",
                        "office": "kota-pekalongan",
                        "state": "confirmed",
                        "created_at": times[0],
                    },
                    {
                        "topic": "kota-pekalongan/kk",
                        "topic_name": "Dindukcapil Kota Pekalongan: Kartu Keluarga",
                        "office": "kota-pekalongan",
                        "state": "pending",
                        "created_at": times[1],
                    },
                ],
                "cases": [
                    {
                        "office": "kota-pekalongan",
                        "reference": "3375-KTP-0007",
                        "document": "KTP-el",
                        "status": "received",
                        "created_at": case_at,
                    }
                ],
                "deliveries": {
                    "total": 2,
                    "states": {"sent": 2},
                    "kinds": {"announcement": 1, "confirmation": 1},
                    "first_sent_at": iso(first),
                    "last_sent_at": iso(last),
                },
            }
        ]
    }
    assert await requests(hub) == [
        (
            "export",
            "Petugas A (surat 12/2026)",
            "email",
            "w***@mail.example.com",
            citizens.address_hash(hub, "email", address),
            None,
            {"endpoints": 1},
        )
    ]
    assert await holding(hub, "warga.ekspor") != {}  # an export erases nothing ...
    async with hub.db.session() as session:  # ... and the record holds no address
        await session.execute(update(CitizenRequest).values(actor="x"))
    assert "citizen_requests" not in await holding(hub, "warga.ekspor", "Warga.Ekspor")


def test_cli_export_and_erase_by_letter(cli, tmp_path) -> None:
    address = "surat.warga@mail.example.com"
    cli("subscribe", "--email", address, "--topic", "kota-pekalongan", "--confirmed")
    db = sqlite3.connect(tmp_path / "hub.db")
    (endpoint_at,) = db.execute("SELECT created_at FROM endpoints").fetchone()
    (sub_at,) = db.execute("SELECT created_at FROM subscriptions").fetchone()
    iso = lambda text: datetime.fromisoformat(text).isoformat() + "Z"  # noqa: E731

    exported = cli("citizens", "export", "--address", address, "--by", "Petugas B")
    assert json.loads(exported.stdout) == {
        "endpoints": [
            {
                "channel": "email",
                "address": address,
                "kind": "person",
                "locale": "id",
                "active": True,
                "deactivated_reason": None,
                "created_at": iso(endpoint_at),
                "subscriptions": [
                    {
                        "topic": "kota-pekalongan",
                        "topic_name": "Dindukcapil Kota Pekalongan",
                        "office": "kota-pekalongan",
                        "state": "confirmed",
                        "created_at": iso(sub_at),
                    }
                ],
                "cases": [],
                "deliveries": {
                    "total": 0,
                    "states": {},
                    "kinds": {},
                    "first_sent_at": None,
                    "last_sent_at": None,
                },
            }
        ]
    }
    done = cli("citizens", "erase", "--address", address, "--channel", "email", "--by", "Petugas B")
    assert done.stdout == (
        "erased 1 address(es): 1 subscription(s), 0 case link(s), 0 delivery row(s) (counts per message "
        "kept)\n"
    )
    again = cli("citizens", "erase", "--address", address, "--by", "Petugas B")
    assert again.stdout == "nothing is held on this address: nothing erased (the request is recorded)\n"

    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    left = {
        table: rows
        for table in tables
        if (rows := [r for r in db.execute(f'SELECT * FROM "{table}"') if any("surat" in str(v) for v in r)])
    }
    assert left == {}
    recorded = db.execute(
        "SELECT action, actor, channel, address_mask, detail FROM citizen_requests ORDER BY id"
    ).fetchall()
    assert [(a, b, c, m, json.loads(d)) for a, b, c, m, d in recorded] == [
        ("export", "Petugas B", "email", "s***@mail.example.com", {"endpoints": 1}),
        (
            "erase",
            "Petugas B",
            "email",
            "s***@mail.example.com",
            {
                "endpoints": 1,
                "subscriptions": 1,
                "case_links": 0,
                "replies": 0,
                "deliveries": 0,
                "channels": ["email"],
            },
        ),
        (
            "erase",
            "Petugas B",
            None,
            "s***@mail.example.com",
            {
                "endpoints": 0,
                "subscriptions": 0,
                "case_links": 0,
                "replies": 0,
                "deliveries": 0,
                "channels": [],
            },
        ),
    ]
    assert "--address" in cli("citizens", "export", "--help").stdout
