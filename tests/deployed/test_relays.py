"""Kelurahan relays as deployed: `hub run` and `hub worker`, 20 groups on the Telegram fake, 3 rooms on
Synapse. 15 confirm they passed a broadcast on (buttons with and without a means, reactions,
`!diteruskan`), the other 8 get exactly one reminder, and the office's editor is told which 8.

Time moves with the rehearsal clock (``HUB_CLOCK_FILE``): the processes read it, the test rewrites it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hub.render import format_moment
from tests.deployed.conftest import Deployment
from tests.deployed.test_sending import announce
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.matrix.conftest import matrix_conf
from tests.integration.telegram.conftest import telegram_conf
from tests.services.synapse import MatrixUser, NewUser

OFFICE = "kota-pekalongan"
EDITOR = "editor.relay@kota-pekalongan.example.go.id"
ADMIN, MEMBER = 6_300_001, 6_300_002
GROUPS = [-1_002_000_000_10 - n for n in range(20)]  # masked as -1***10 ... -1***29
CONFIRMED = GROUPS[:12]
MEANS = {GROUPS[0]: "wa", GROUPS[1]: "papan", GROUPS[2]: "masjid", GROUPS[3]: "rt", GROUPS[4]: "lain"}
MEANS_KEY = {
    "wa": "whatsapp_group",
    "papan": "notice_board",
    "masjid": "mosque",
    "rt": "rt_rw_meeting",
    "lain": "other",
}
REGISTERED = "Grup ini terdaftar sebagai penerus informasi Dindukcapil Kota Pekalongan. Terima kasih."


def _set_clock(path: Path, ahead: timedelta) -> None:
    path.write_text((datetime.now(UTC) + ahead).isoformat(), encoding="utf-8")


def _db(d: Deployment, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(d.settings.database.url.split("///", 1)[1]) as conn:
        return conn.execute(sql, args).fetchall()


async def test_twenty_groups_and_three_rooms_confirm_or_are_reminded_once_and_the_office_is_told(
    make_deployment: Callable[..., Deployment],
    fake: FakeTelegram,
    synapse: Any,
    bot: MatrixUser,
    new_user: NewUser,
    tmp_path: Path,
) -> None:
    d = make_deployment(
        channels={
            "telegram": telegram_conf(fake),
            "matrix": matrix_conf(synapse.base_url, bot, tmp_path / "store"),
        },
        queue={"reconcile_every_seconds": 1},
        # The report goes to the office's editors and above (tests/integration/relays/test_acks.py) and to
        # the office's report_to addresses: here the latter, which spares a `hub users create`.
        relays={"remind_after_minutes": 120, "report_after_minutes": 240, "report_to": {OFFICE: [EDITOR]}},
    )
    clock = tmp_path / "clock"
    d.env["HUB_CLOCK_FILE"] = str(clock)
    worker = d.start_worker()
    with ThreadPoolExecutor(2) as pool:  # an operator's two commands, at once while the worker starts
        key = pool.submit(d.cli, "keys", "create", "--office", OFFICE, "--role", "staff")
        made = pool.submit(d.cli, "relays", "code", "--office", OFFICE, "--count", "23")
    staff = {"Authorization": f"Bearer {key.result().stdout.strip()}"}
    codes = made.result().stdout.split()
    procs = [d.start_run(), worker]

    # Registration: each group's admin sends its code; the rooms' lurah invites the bot and does the same.
    for chat, code in zip(GROUPS, codes, strict=False):
        fake.add_group(chat, title=f"Kelurahan {chat}", admins=(ADMIN,))
        fake.inject_message(chat, f"/kelurahan {code}", from_id=ADMIN)
    lurah = await new_user("lurah")
    rooms = [await lurah.create_room(name=f"Kelurahan M{n}", invite=[bot.user_id]) for n in range(3)]

    async def bot_says(room: str) -> list[dict[str, Any]]:
        return [e for e in await lurah.messages(room) if e["sender"] == bot.user_id]

    for room, code in zip(rooms, codes[20:], strict=True):
        await _until(lambda room=room: bot_says(room), 30, "the bot to join the room")
        await lurah.say(room, f"!kelurahan {code}")
    d.wait_for(lambda: all(REGISTERED in fake.texts(c) for c in GROUPS), 30, "20 groups registered", procs[0])
    for room in rooms:
        await _until(lambda room=room: _has(bot_says(room), REGISTERED), 30, "the room registered")

    shown = announce(d)
    ann = shown["id"]
    broadcast = lambda chat: next((m for m in fake.messages(chat) if m.reply_markup), None)  # noqa: E731
    d.wait_for(lambda: all(broadcast(c) for c in GROUPS), 30, "the broadcast in 20 groups", procs[0])
    events = [await _until(lambda room=room: _has(bot_says(room), "!diteruskan"), 30, "it") for room in rooms]

    # 12 groups press "Sudah diteruskan" (any member may), 5 of them then say how; two rooms react, one
    # writes !diteruskan with its code and how.
    for chat in CONFIRMED:
        data = broadcast(chat).reply_markup["inline_keyboard"][0][0]["callback_data"]
        fake.inject_callback(chat, data, from_id=MEMBER, message_id=broadcast(chat).message_id)
    for chat, word in MEANS.items():
        asked = d.wait_for(lambda chat=chat: _means_menu(fake, chat), 20, "the means buttons", procs[0])
        choice = next(
            b
            for row in asked.reply_markup["inline_keyboard"]
            for b in row
            if b["callback_data"].endswith(f":{word}")
        )
        fake.inject_callback(chat, choice["callback_data"], from_id=MEMBER, message_id=asked.message_id)
    for room, event, key_ in zip(rooms[:2], events[:2], ("✅", "👍"), strict=True):
        relates = {"rel_type": "m.annotation", "event_id": event["event_id"], "key": key_}
        await lurah.call(
            "PUT",
            f"/rooms/{quote(room)}/send/m.reaction/{uuid.uuid4().hex}",
            {"m.relates_to": relates},
        )
    code = re.search(r"!diteruskan (\w+)", events[2]["content"]["body"]).group(1)
    await lurah.say(rooms[2], f"!diteruskan {code} masjid")

    def acks(confirmed: int) -> dict[str, Any] | None:
        shown = d.api.get(f"/v1/announcements/{ann}/relays", headers=staff).json()
        done = [r for r in shown["relays"] if r["confirmed"]]
        return shown if len(done) == confirmed and len([r for r in done if r["means"]]) == 6 else None

    recorded = d.wait_for(lambda: acks(15), 30, "15 confirmations with 6 means", procs[0])
    by_address = {r["address"]: r for r in recorded["relays"]}
    for chat in CONFIRMED:
        row = by_address[f"-1***{str(chat)[-2:]}"]
        assert row["confirmed_via"] == "button" and row["confirmed_at"] and row["confirmed_by"], row
        assert row["means"] == MEANS_KEY.get(MEANS.get(chat, "")), row
    via = sorted((r["confirmed_via"], r["means"]) for r in recorded["relays"] if r["channel"] == "matrix")
    assert via == [("command", "mosque"), ("reaction", None), ("reaction", None)]
    silent = [c for c in GROUPS if c not in CONFIRMED]

    # Three hours on: one reminder to each of the 8 silent groups, none to the others.
    _set_clock(clock, timedelta(hours=3))
    reminders = lambda chat: [t for t in fake.texts(chat) if t.startswith("Pengingat")]  # noqa: E731
    d.wait_for(lambda: all(reminders(c) for c in silent), 30, "8 reminders", procs[0])

    # Five hours on: the office's editor is told which 8, once.
    _set_clock(clock, timedelta(hours=5))
    d.wait_for(lambda: d.mailbox.to(EDITOR), 30, "the report to the office", procs[0])
    time.sleep(2.5)  # a second reminder or report, were there one, would be out by now
    assert {c: len(reminders(c)) for c in GROUPS} == {c: int(c in silent) for c in GROUPS}
    for chat in silent:  # the reminder offers the same button as the broadcast
        [again] = [m for m in fake.messages(chat) if m.visible_text.startswith("Pengingat")]
        assert again.reply_markup == broadcast(chat).reply_markup
    [report] = d.mailbox.to(EDITOR)
    ids = dict(_db(d, "SELECT address, id FROM endpoints WHERE relay_office_id = ?", OFFICE))
    (subject_id, send_at) = _db(
        d,
        "SELECT r.subject, m.send_at FROM messages m JOIN renderings r ON r.message_id = m.id "
        "WHERE m.id = ? AND r.channel = 'email' AND r.locale = 'id'",
        shown["message_id"],
    )[0]
    sent = datetime.fromisoformat(send_at)
    lines = [
        f"- #{ids[str(c)]} telegram -1***{str(c)[-2:]}" for c in sorted(silent, key=lambda c: ids[str(c)])
    ]
    link = f"{d.url}/console/pengumuman/{ann}"
    assert report["Subject"] == f"Kelurahan belum konfirmasi / Relays not confirmed: #{ann}"
    assert report.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == "\n".join(
        [
            f"Pengumuman #{ann} «{subject_id}», dikirim {format_moment(sent, 'id')}: 8 dari 23 kelurahan "
            "belum mengonfirmasi sudah meneruskannya, juga setelah satu pengingat:",
            *lines,
            f"Rincian: {link}",
            "",
            f"Announcement #{ann} «{subject_id}», sent {format_moment(sent, 'en')}: 8 of 23 relays have not "
            "confirmed they passed it on, even after one reminder:",
            *lines,
            f"Details: {link}",
        ]
    )
    final = d.api.get(f"/v1/announcements/{ann}/relays", headers=staff).json()
    assert json.loads(d.cli("relays", "acks", str(ann), "--json").stdout) == final  # the CLI shows the same
    assert (final["confirmed"], final["unconfirmed"]) == (15, 8)
    told = [r for r in final["relays"] if r["office_told_at"]]
    assert sorted(r["address"] for r in told) == sorted(f"-1***{str(c)[-2:]}" for c in silent)
    assert all(r["reminded_at"] for r in told)
    # Every press was answered (answerCallbackQuery), so no client was left with a spinning button.
    assert len(fake.answered_callbacks) == len(CONFIRMED) + len(MEANS)


def _means_menu(fake: FakeTelegram, chat: int) -> Any:
    return next((m for m in fake.messages(chat) if m.reply_markup and "Lewat mana" in m.visible_text), None)


async def _has(found: Any, text: str) -> dict[str, Any] | None:
    return next((e for e in await found if text in e["content"].get("body", "")), None)


async def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    import asyncio

    import pytest

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
