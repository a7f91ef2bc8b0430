"""Kelurahan relays confirm a broadcast from their own chat, once; one reminder, then the office told.

In process, with doubles of the three chat adapters (their names, prefixes and declared abilities) and
the SMTP sink for email: what the logic does with forged, replayed, foreign and never-received acks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from channels.base import Inbound, Rejected
from channels.testing import ScriptedChannel
from hub import announcements, clock
from hub.api.app import create_app
from hub.bot.conversation import Conversation
from hub.cli.users import create_account
from hub.console.auth import Role
from hub.context import Hub
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.relays import codes, manage, remind
from hub.store.models import Delivery, Endpoint, RelayAck
from tests.conftest import Mailbox, make_settings, start_hub

OFFICE = "kota-pekalongan"
TG, TG_OTHER, ROOM, SMS, SMS_FAILED, MAIL = (
    "-100500001",
    "-100500002",
    "!kelurahan:hub.test",
    "+6281100000001",
    "+6281100000002",
    "lurah@kelurahan.example.go.id",
)
EDITOR = "editor@kota-pekalongan.example.go.id"


def channels() -> dict[str, ScriptedChannel]:
    return {
        "telegram": ScriptedChannel(name="telegram", command_prefix="/", buttons=True),
        "matrix": ScriptedChannel(name="matrix", command_prefix="!", reactions=True, listening="worker"),
        "sms": ScriptedChannel(name="sms", command_prefix="", webhooks=True),
    }


@pytest.fixture
async def rhub(
    sqlite_database: tuple[str, str | None], redis_url: str, smtp: tuple[Mailbox, int], monkeypatch: Any
) -> AsyncIterator[tuple[Hub, list[tuple[str, str, str, list[dict[str, str]]]]]]:
    url, schema = sqlite_database
    hub = await start_hub(make_settings(url, redis_url, smtp[1], schema), extra_channels=channels())
    replies: list[tuple[str, str, str, list[dict[str, str]]]] = []

    async def reply(self: Conversation, text: str, buttons: Any = None, *, to: Any = None) -> int:
        replies.append((self.record.channel, self.record.address, text, list(buttons or [])))
        return 0

    monkeypatch.setattr(Conversation, "reply", reply)
    try:
        yield hub, replies
    finally:
        await hub.close()


def record(channel: str, kind: str, address: str, **fields: Any) -> Inbound:
    chat_kind = "person" if channel == "sms" else "group"
    return Inbound(
        channel=channel,
        kind=kind,
        address=address,
        sender=fields.pop("sender", "7001"),
        chat_kind=chat_kind,
        **fields,
    )


async def ack_rows(hub: Hub) -> dict[str, tuple[Any, ...]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(
                Endpoint.address,
                RelayAck.confirmed_at,
                RelayAck.means,
                RelayAck.confirmed_via,
                RelayAck.reminded_at,
                RelayAck.office_told_at,
            ).join(Endpoint, Endpoint.id == RelayAck.endpoint_id)
        )
        return {r[0]: (r[1] is not None, r[2], r[3], r[4] is not None, r[5] is not None) for r in rows}


async def test_acks_from_the_relays_own_chat_count_once_then_one_reminder_and_one_report(
    rhub, smtp, monkeypatch
):
    hub, replies = rhub
    mailbox = smtp[0]
    tg, matrix, sms = (hub.channels[n] for n in ("telegram", "matrix", "sms"))
    for channel, address in (
        ("telegram", TG),
        ("telegram", TG_OTHER),
        ("matrix", ROOM),
        ("sms", SMS),
        ("sms", SMS_FAILED),
        ("email", MAIL),
    ):
        await manage.register(hub, OFFICE, channel, address)
    await create_account(hub, OFFICE, Role.EDITOR, EDITOR, "Editor")
    sms.script(SMS_FAILED, Rejected("number barred"))
    req = announcements.AnnouncementInput(
        template="free_text", topics=[OFFICE], data={"title": "Jam layanan", "text": "Buka 08.00."}
    )
    ann, message = await announcements.create(hub, req, publish=True)
    await drain(hub)

    async with hub.db.session() as session:
        ids = dict(
            (
                await session.execute(
                    select(Endpoint.address, Delivery.id)
                    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                    .where(Delivery.message_id == message.id)
                )
            ).all()
        )
    code = {address: codes.make_code(hub.secret, ids[address]) for address in ids}
    notice = f"Pengumuman untuk dicetak (PDF): http://hub.test/kantor/{OFFICE}/pengumuman/{ann.id}/cetak.pdf"
    sent_tg = next(i for i in tg.sent if i.address == TG)
    assert [(b.text, b.data) for b in sent_tg.content.buttons] == [("Sudah diteruskan", f"ra:{code[TG]}")]
    assert sent_tg.content.text.endswith("Setelah diteruskan, tekan tombol «Sudah diteruskan».\n" + notice)
    assert f"kirim !diteruskan {code[ROOM]} (boleh" in matrix.sent[0].content.text
    assert f"balas SMS: OK {code[SMS]} (boleh" in next(i for i in sms.sent if i.address == SMS).content.text
    mail = mailbox.to(MAIL)[-1].get_body(("plain",)).get_content()
    link = next(w for w in mail.split() if "/v1/relays/ack/" in w)
    assert notice in mail

    # Nothing is recorded from another chat, for a forged code, or for a message the relay never got.
    forged = code[TG][:-1] + ("A" if code[TG][-1] != "A" else "B")
    await handle_inbound(hub, record("telegram", "button", TG_OTHER, data=f"ra:{code[TG]}"))
    await handle_inbound(hub, record("telegram", "button", TG, data=f"ra:{forged}"))
    await handle_inbound(
        hub, record("sms", "command", SMS_FAILED, sender=SMS_FAILED, command="ok", args=(code[SMS_FAILED],))
    )
    await handle_inbound(hub, record("matrix", "command", ROOM, command="diteruskan", args=(code[SMS],)))
    refused = "Kode konfirmasi ini tidak berlaku di sini; tidak ada yang dicatat."
    assert [r[2] for r in replies] == [refused] * 4
    citizen = "+6281100000099"  # a citizen thanking the hub is not a relay confirming anything
    await handle_inbound(
        hub, record("sms", "command", citizen, sender=citizen, command="ok", args=("terima", "kasih"))
    )
    assert replies[-1][2].startswith("Maaf, saya tidak mengerti.")
    assert await ack_rows(hub) == {}

    # The relays' own acks: a button then its means, a reaction, an SMS with a means, the email link.
    replies.clear()
    await handle_inbound(hub, record("telegram", "button", TG, data=f"ra:{code[TG]}", sender="7002"))
    asked = replies[-1]
    assert asked[2].startswith("Terima kasih, tercatat") and [b["data"] for b in asked[3]] == [
        f"rm:{code[TG]}:{w}" for w in ("wa", "papan", "masjid", "rt", "lain")
    ]
    await handle_inbound(hub, record("telegram", "button", TG, data=f"rm:{code[TG]}:wa"))
    await handle_inbound(hub, record("telegram", "button", TG, data=f"ra:{code[TG]}"))  # a replay
    event = matrix.sent[0]
    await handle_inbound(
        hub, record("matrix", "reaction", ROOM, text="✅", reply_ref=f"scripted-{event.delivery_id}")
    )
    await handle_inbound(hub, record("matrix", "reaction", ROOM, text="👍", reply_ref="$not-ours"))
    await handle_inbound(
        hub, record("sms", "command", SMS, sender=SMS, command="ok", args=(code[SMS].lower(), "PAPAN"))
    )
    await handle_inbound(
        hub, record("sms", "command", SMS, sender=SMS, command="ok", args=(code[SMS], "masjid"))
    )
    assert [r[2] for r in replies[1:]] == [
        "Tercatat: diteruskan lewat grup WhatsApp.",
        "Konfirmasi ini sudah tercatat sebelumnya; tidak ada yang diubah.",
        "Terima kasih, tercatat: pengumuman sudah diteruskan.",
        "Tercatat: diteruskan lewat papan pengumuman.",
        "Konfirmasi ini sudah tercatat sebelumnya; tidak ada yang diubah.",
    ]
    path = link.split("http://hub.test", 1)[1]
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api:
        page = await api.get(path)
        assert page.status_code == 200 and 'value="mosque"' in page.text
        assert MAIL not in await ack_rows(hub)  # showing the page recorded nothing
        assert (await api.post(path, data={"means": "mosque"})).status_code == 200
        assert "sudah tercatat" in (await api.post(path, data={"means": "other"})).text
        assert (await api.get(path[:-2] + "xx")).status_code == 400
    assert await ack_rows(hub) == {
        TG: (True, "whatsapp_group", "button", False, False),
        ROOM: (True, None, "reaction", False, False),
        SMS: (True, "notice_board", "reply", False, False),
        MAIL: (True, "mosque", "link", False, False),
    }

    # Three hours on: one reminder to the one relay that got the message and did not confirm, once.
    real = clock.utcnow
    monkeypatch.setattr(remind, "utcnow", lambda: real() + timedelta(hours=3))
    assert await remind.remind_and_report(hub) == {"reminders": 1, "reports": 0}
    assert await remind.remind_and_report(hub) == {"reminders": 0, "reports": 0}
    await drain(hub)
    reminder = [i for i in tg.sent if i.address == TG_OTHER][-1]
    assert reminder.content.text.startswith(
        "Pengingat: pengumuman «Dindukcapil Kota Pekalongan: Jam layanan» dari Dindukcapil Kota Pekalongan "
        "belum dikonfirmasi sudah diteruskan.\nKelurahan: mohon teruskan"
    )
    assert [b.data for b in reminder.content.buttons] == [f"ra:{code[TG_OTHER]}"]

    # Five hours on: the office's editor is told once, naming that relay.
    monkeypatch.setattr(remind, "utcnow", lambda: real() + timedelta(hours=5))
    assert await remind.remind_and_report(hub) == {"reminders": 0, "reports": 1}
    assert await remind.remind_and_report(hub) == {"reminders": 0, "reports": 0}
    await drain(hub)
    told = mailbox.to(EDITOR)
    assert len(told) == 1
    body = told[0].get_body(("plain",)).get_content().replace("\r\n", "\n")
    async with hub.db.session() as session:
        other = await session.scalar(select(Endpoint.id).where(Endpoint.address == TG_OTHER))
    assert f"- #{other} telegram -1***02\n" in body and "1 dari 5 kelurahan" in body
    assert (await ack_rows(hub))[TG_OTHER] == (False, None, None, True, True)
    shown = await manage.acks_of(hub, ann.id)
    assert (shown["total"], shown["confirmed"], shown["unconfirmed"]) == (6, 4, 2)
