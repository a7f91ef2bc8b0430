"""A receipt's deep-link code (``/start c...``) stands in for the PIN, so it links one private chat, once,
for LINK_CODE_DAYS; in a group it says nothing of the case and is voided; the store keeps only its hash.
End to end through the hub's webhook route and the loopback Bot API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from hub import applicants
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery import drain
from hub.keys import create_key
from hub.store.db import MIGRATIONS, Database
from hub.store.models import ApplicantCase, CaseEndpoint, Endpoint
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import Chat

ALICE, BUDI, CITRA, DEWI = 830_001, 830_002, 830_003, 830_004
GROUP = -4_300_001

LINKED = "Permohonan KK 3375-KK-0007 terhubung. Status: diterima. Kabar berikutnya dikirim ke sini."
USED_ID = (
    "Kode ini sudah dipakai dan tidak berlaku lagi. Untuk melihat status permohonan, kirim /lacak KODE PIN "
    "sesuai tanda terima."
)
USED_EN = (
    "This code has already been used and no longer works. To see your application's status, send "
    "/lacak CODE PIN as printed on your receipt."
)
EXPIRED_ID = (
    "Kode ini sudah kedaluwarsa. Untuk melihat status permohonan, kirim /lacak KODE PIN sesuai tanda terima."
)
EXPIRED_EN = (
    "This code has expired. To see your application's status, send /lacak CODE PIN as printed on your "
    "receipt."
)
PRIVATE_ONLY = (
    "Demi keamanan, kode dari tanda terima hanya berlaku lewat pesan pribadi kepada saya. Kode yang "
    "dikirim di grup tidak berlaku lagi; kirim /lacak KODE PIN lewat pesan pribadi."
)


async def open_case(bot: Chat, reference: str = "3375-KK-0007") -> dict[str, Any]:
    """A case opened by an intake system through the API, as the receipt prints it."""
    key = await create_key(bot.hub, "kota-pekalongan", "intake", "loket")
    opened = await bot.client.post(
        "/v1/applicants",
        headers={"Authorization": f"Bearer {key}"},
        json={"reference": reference, "document": "KK"},
    )
    assert opened.status_code == 201, opened.text
    return dict(opened.json())


async def linked_chats(hub: Hub) -> set[str]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address).join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
        )
        return set(rows.scalars())


async def test_a_code_links_one_chat_once_and_is_stored_only_as_a_hash(bot: Chat, fake: FakeTelegram) -> None:
    for person in (ALICE, BUDI):
        fake.add_private(person)
    fake.add_private(CITRA, language_code="en")
    receipt = await open_case(bot)
    code = receipt["link_code"]

    assert await bot.say(ALICE, f"/start {code}") == [LINKED]
    # A second use does nothing, whoever sends it, and says so in the chat's language.
    assert await bot.say(ALICE, f"/start {code}") == [USED_ID]
    assert await bot.say(BUDI, f"/start {code}") == [USED_ID]
    assert await bot.say(CITRA, f"/start {code}") == [USED_EN]
    assert await linked_chats(bot.hub) == {str(ALICE)}

    # The store holds a hash of the code, never the code.
    async with bot.hub.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM applicant_cases"))).mappings().one()
    assert code not in repr(dict(row))
    assert row["link_code_hash"] == hashlib.sha256(code.encode()).hexdigest()


async def test_a_code_sent_in_a_group_tells_the_group_nothing_and_is_void(
    bot: Chat, fake: FakeTelegram
) -> None:
    fake.add_private(DEWI)
    fake.add_group(GROUP, title="Warga RW 03", creator=DEWI)
    code = (await open_case(bot))["link_code"]

    # As typed, and as Telegram sends it when a startgroup link adds the bot to a group.
    assert await bot.say(GROUP, f"/start {code}", from_id=DEWI) == [PRIVATE_ONLY]
    assert await bot.say(GROUP, f"/start@{fake.bot_username} {code}", from_id=DEWI) == [PRIVATE_ONLY]
    # An unknown code gets the same answer: the group cannot even tell whether a code was real.
    assert await bot.say(GROUP, "/start cBukanKodeSiapaPun1", from_id=DEWI) == [PRIVATE_ONLY]
    assert await linked_chats(bot.hub) == set()

    # The group has read the code: it links no one any more, not even the applicant.
    assert await bot.say(DEWI, f"/start {code}") == [USED_ID]
    assert await linked_chats(bot.hub) == set()


async def test_a_code_expires_seven_days_after_the_receipt(
    bot: Chat, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_private(ALICE)
    fake.add_private(BUDI, language_code="en")
    fake.add_private(CITRA)
    first = (await open_case(bot, "3375-KK-0007"))["link_code"]
    second = (await open_case(bot, "3375-KK-0008"))["link_code"]
    now = utcnow()

    monkeypatch.setattr(applicants, "utcnow", lambda: now + timedelta(days=6, hours=23))
    assert await bot.say(ALICE, f"/start {first}") == [LINKED]
    monkeypatch.setattr(applicants, "utcnow", lambda: now + timedelta(days=7, minutes=1))
    assert await bot.say(BUDI, f"/start {second}") == [EXPIRED_EN]
    assert await bot.say(CITRA, f"/start {second}") == [EXPIRED_ID]
    assert await linked_chats(bot.hub) == {str(ALICE)}


async def test_many_chats_racing_with_one_code_link_exactly_one(bot: Chat, fake: FakeTelegram) -> None:
    chats = [840_000 + n for n in range(20)]
    for chat in chats:
        fake.add_private(chat)
    code = (await open_case(bot))["link_code"]

    updates = [fake.inject_message(chat, f"/start {code}") for chat in chats]
    responses = await asyncio.gather(*(bot.post(update) for update in updates))
    assert [r.status_code for r in responses] == [200] * len(chats)
    await drain(bot.hub, idle_checks=1)

    replies = sorted(m.visible_text for chat in chats for m in fake.messages(chat))
    assert replies == sorted([LINKED] + [USED_ID] * (len(chats) - 1))
    linked = await linked_chats(bot.hub)
    assert len(linked) == 1
    (winner,) = linked
    assert [m.visible_text for m in fake.messages(int(winner))] == [LINKED]


async def test_migration_keeps_issued_codes_as_hashes_that_expire(database: tuple[str, str | None]) -> None:
    """Codes issued before issue 9 keep working once, until 7 days after their case was opened."""
    url, schema = database
    db = Database(url, schema=schema)
    opened_at = datetime(2026, 11, 30, 8, 15)
    try:
        await _alembic(db, "0002")
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO regions (code, name, level, path) "
                    "VALUES ('33.75', 'Kota Pekalongan', 'kota', '33.75/')"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO offices (id, name, region_code, timezone, profile) VALUES "
                    "('kota-pekalongan', 'Dindukcapil Kota Pekalongan', '33.75', 'Asia/Jakarta', '{}')"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO applicant_cases (office_id, reference, document, pin_hash, link_code, "
                    "status, locale, created_at, updated_at) VALUES ('kota-pekalongan', '3375-KK-0001', "
                    "'KK', 'x', 'cLamaSekali12345', 'received', 'id', :at, :at)"
                ),
                {"at": opened_at},
            )
        await _alembic(db, "head")
        async with db.session() as session:
            case = await session.scalar(select(ApplicantCase))
        assert case is not None
        assert (case.link_code_hash, case.link_expires_at, case.link_used_at) == (
            hashlib.sha256(b"cLamaSekali12345").hexdigest(),
            datetime(2026, 12, 7, 8, 15),
            None,
        )
        async with db.engine.connect() as conn:
            row = (await conn.execute(sa.text("SELECT * FROM applicant_cases"))).mappings().one()
        assert "cLamaSekali12345" not in repr(dict(row))
    finally:
        await db.dispose()


async def _alembic(db: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    async with db.engine.begin() as conn:
        if db.schema:
            await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')

        def run(sync_conn: Any) -> None:
            config.attributes["connection"] = sync_conn
            command.upgrade(config, revision)

        await conn.run_sync(run)
