"""The Telegram bot as deployed: `hub run`, `hub worker` and `hub listen telegram` against a loopback Bot API.

Telegram itself cannot be reached from tests, so the processes talk to the fake Bot API of
tests/fakes/telegram_api.py (Telegram's documented limits, errors and 429 ``retry_after``). In polling
mode getUpdates allows one poller per bot, so the bot listens in `hub run` or in `hub listen telegram`,
never in `hub worker` (``listening="listener"``); workers only send. A citizen writes to the bot in the
fake, and the test reads what the bot answered there, what the database and the API hold, and what
`hub status` says of a broadcast.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.deployed.conftest import Deployment
from tests.deployed.test_sending import announce, wait_done
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import telegram_conf

CITIZEN = 6_100_001
TOPIC = "kota-pekalongan"  # `hub init` plus data/offices.toml: the office's general topic

HELP = (
    "Layanan informasi Disdukcapil. Perintah:\n"
    "/langganan - berlangganan informasi kantor\n"
    "/berhenti - berhenti berlangganan\n"
    "/jam - jam layanan dan kuota\n"
    "/layanan - nomor layanan dan aplikasi\n"
    "/lacak KODE PIN - status permohonan Anda\n"
    "/dataku - data Anda yang kami simpan; /hapus - hapus data Anda\n"
    "/bantuan - pesan ini"
)
WELCOME = "Selamat datang di layanan informasi Disdukcapil.\n\n" + HELP
SUBSCRIBED = "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim /berhenti untuk berhenti."
#: The office's status (data/offices.toml: its recorded hours of 2020-03); today's line depends on the day.
HOURS = re.compile(
    "Jam layanan Dindukcapil Kota Pekalongan:\nHari ini: [^\n]+\n"
    "Senin\u2013Kamis 08.00\u201311.00; Jumat 08.00\u201310.00 WIB(\nKuota: 50 orang per hari.)?"
)


def with_telegram(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram, **sections: Any
) -> Deployment:
    """A deployment whose settings file enables the Telegram channel, polling the fake."""
    return make_deployment(channels={"telegram": telegram_conf(fake)}, **sections)


def subscription_state(d: Deployment, address: str) -> str | None:
    """What the database holds for the citizen (the test's only look behind the hub's interfaces)."""
    db = d.settings.database.url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT s.state FROM subscriptions s JOIN endpoints e ON e.id = s.endpoint_id "
            "JOIN topics t ON t.id = s.topic_id "
            "WHERE e.channel = 'telegram' AND e.address = ? AND t.slug = ?",
            (address, TOPIC),
        ).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------------------
# The bot answers a citizen


@pytest.mark.parametrize("processes", ["run", "worker+listen"])
def test_citizen_subscribes_and_asks_the_hours_by_telegram(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram, processes: str
) -> None:
    d = with_telegram(make_deployment, fake)
    procs = [d.start_run()] if processes == "run" else [d.start_worker(), d.start_listen("telegram")]
    fake.add_private(CITIZEN, first_name="Citra")
    assert subscription_state(d, str(CITIZEN)) is None

    for text in ("/start", f"/langganan {TOPIC}", "/jam"):
        fake.inject_message(CITIZEN, text)

    def replies() -> list[str] | None:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a hub process exited with {proc.returncode}:\n{d.log(proc)[-3000:]}")
        texts = [m.visible_text for m in fake.messages(CITIZEN)]
        return texts if len(texts) >= 3 else None

    d.wait_for(replies, 30, "the bot's three replies")
    time.sleep(1.0)  # anything sent twice would land by now
    texts = [m.visible_text for m in fake.messages(CITIZEN)]
    assert texts[:2] == [WELCOME, SUBSCRIBED] and len(texts) == 3 and HOURS.fullmatch(texts[2]), texts
    assert subscription_state(d, str(CITIZEN)) == "confirmed"
    if processes == "run":  # what the office's staff see through the API, the address masked
        key = d.cli("keys", "create", "--office", "kota-pekalongan", "--role", "staff").stdout.strip()
        shown = d.api.get("/v1/subscribers", headers={"Authorization": f"Bearer {key}"}).json()["items"]
        assert [{k: v for k, v in row.items() if k != "id"} for row in shown] == [
            {
                "topic": TOPIC,
                "state": "confirmed",
                "channel": "telegram",
                "address": "61***01",
                "active": True,
            }
        ]
    assert fake.pending_updates() == []  # every update was confirmed by the next getUpdates offset
    assert fake.too_many_requests == 0, fake.errors_for()


# ---------------------------------------------------------------------------------------------------------
# A 429 storm mid-broadcast: the workers wait it out, nobody fails, nobody gets the message twice

PEOPLE = [7_200_000 + n for n in range(200)]
STORM_SECONDS = 4


def subscribe_chats(d: Deployment, fake: FakeTelegram, chats: list[int]) -> None:
    """Citizens who started the bot (in the fake), imported by the CLI as confirmed subscribers."""
    for chat in chats:
        fake.add_private(chat)
    people = d.workdir / "telegram.csv"
    people.write_text("address\n" + "".join(f"{c}\n" for c in chats), encoding="utf-8")
    d.cli("subscribers", "import", str(people), "--topic", TOPIC, "--channel", "telegram", "--confirmed")


def test_a_429_storm_mid_broadcast_fails_nobody_and_sends_nothing_twice(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram
) -> None:
    # One attempt: were a 429 charged to the recipient, its delivery would fail at once
    # (docs/design.md, "Retries": a provider's "retry after" spends no attempt).
    d = with_telegram(make_deployment, fake, queue={"max_attempts": 1})
    subscribe_chats(d, fake, PEOPLE)
    shown = announce(d)
    workers = [d.start_worker(), d.start_worker()]
    d.wait_for(lambda: len(fake.messages()) >= 40, 60, "the broadcast to start", workers[0])

    # Telegram holds the bot: every sendMessage is refused, "retry after 1" each time, so workers that
    # obey meet the storm again each second until it passes.
    storm_from, storm_until = fake.storm(STORM_SECONDS, retry_after=1)
    final = wait_done(d, shown["message_id"], 90, workers)
    time.sleep(1.0)  # a send still under way when the status settled lands by now

    totals = final["totals"]
    assert totals["failed"] == 0 and totals["sent"] == len(PEOPLE), totals
    sent = Counter(int(m.chat_id) for m in fake.messages())
    assert sorted(sent) == PEOPLE, f"{len(PEOPLE) - len(sent)} chats got nothing"
    assert set(sent.values()) == {1}, {chat: n for chat, n in sent.items() if n > 1}
    refused = fake.errors_for("sendMessage")
    assert {code for code, _ in refused} == {429}, refused
    # The storm was met more than once (it outlasts a retry_after), and obeyed: the pause is shared by
    # both workers through Redis, so a second's storm costs a few 429s, not the ~25 of a bot that
    # went on sending at its pace.
    assert 2 <= fake.too_many_requests <= 5 * STORM_SECONDS, fake.too_many_requests
    assert not [m for m in fake.messages() if storm_from <= m.at < storm_until]
    assert [m for m in fake.messages() if m.at >= storm_until], "nothing went out after the storm"
