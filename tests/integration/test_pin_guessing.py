"""Guessing a case's PIN (issue 9, hole 1): every guess goes through the bot's brain (``hub.bot.answer``)
as the adapters hand it over, at two hubs sharing one Redis and one database (two processes, as far as
shared state goes), on Telegram, SMS and Matrix.

A PIN check is counted where it happens: ``applicants.check_pin`` reports how many cases it compared
the PIN with, and the test adds those up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from sqlalchemy import select
from structlog.testing import capture_logs

from channels.base import Inbound, WebhookRequest
from channels.sms import SmsChannel
from channels.testing import ScriptedChannel
from hub import applicants
from hub.bot import answer
from hub.bot.conversation import Conversation
from hub.context import Hub, build_hub
from hub.ratelimit import shared_count
from hub.store.models import ApplicantCase, CaseEndpoint, Endpoint
from tests.conftest import make_settings, start_hub

REFERENCE = "3375-KK-0042"
WRONG = "Kode atau PIN tidak cocok."
LIMITED = "Terlalu banyak percobaan. Coba lagi nanti."
LOCKED = (
    "Permohonan ini dikunci karena terlalu banyak PIN yang salah; PIN-nya tidak berlaku lagi. "
    "Gunakan tautan pada tanda terima Anda, atau hubungi kantor Disdukcapil."
)
LOCKED_EN = (
    "This application is locked after too many wrong PINs; its PIN no longer works. "
    "Use the link on your receipt, or contact the Disdukcapil office."
)
LINKED = "Permohonan KK 3375-KK-0042 terhubung. Status: diterima. Kabar berikutnya dikirim ke sini."


def channels() -> dict[str, ScriptedChannel]:
    """Doubles of the three adapters, as the bot sees them: their names, prefixes and abilities."""
    return {
        "telegram": ScriptedChannel(name="telegram", command_prefix="/"),
        "sms": ScriptedChannel(name="sms", command_prefix=""),
        "matrix": ScriptedChannel(name="matrix", command_prefix="!", initiates_direct=True),
    }


@dataclass
class Scene:
    hubs: tuple[Hub, Hub]
    pin: str
    link_code: str
    #: (channel, address the reply goes to, text) of every reply, in order.
    replies: list[tuple[str, str, str]] = field(default_factory=list)
    #: PINs compared with a case, added up over every check.
    checks: int = 0

    def texts(self) -> Counter[str]:
        return Counter(text for _, _, text in self.replies)


@pytest.fixture
async def scene(
    database: tuple[str, str | None], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Scene]:
    url, schema = database
    settings = make_settings(url, redis_url, None, schema)
    first = await start_hub(settings, extra_channels=channels())
    second = await build_hub(settings, extra_channels=channels())
    opened = await applicants.open_case(
        first, "kota-pekalongan", applicants.CaseInput(reference=REFERENCE, document="KK")
    )
    scene = Scene((first, second), opened.pin, opened.link_code)

    async def reply(self: Conversation, text: str, buttons: Any = None, *, to: Endpoint | None = None) -> int:
        scene.replies.append((self.record.channel, to.address if to else self.record.address, text))
        return 0

    real_check = applicants.check_pin

    async def check_pin(hub: Hub, reference: str, pin: str) -> applicants.PinCheck:
        result = await real_check(hub, reference, pin)
        scene.checks += result.checked
        return result

    monkeypatch.setattr(Conversation, "reply", reply)
    monkeypatch.setattr(applicants, "check_pin", check_pin)
    try:
        yield scene
    finally:
        await second.close()
        await first.close()


def guess(channel: str, sender: str, pin: str, *, room: str = "", locale: str = "id") -> Inbound:
    """``lacak REFERENCE PIN`` as the channel's adapter hands it over (in a private chat, or a room)."""
    return Inbound(
        channel=channel,
        kind="command",
        address=room or sender,
        sender=sender,
        chat_kind="group" if room else "person",
        command={"telegram": "/lacak", "sms": "LACAK", "matrix": "!lacak"}[channel],
        args=(REFERENCE, pin),
        locale=locale,
    )


def sender(channel: str, n: int) -> str:
    return {"telegram": f"{830_000 + n}", "sms": f"+62812300{n:05d}", "matrix": f"@warga{n}:matrix.test"}[
        channel
    ]


def wrong_pins(right: str) -> itertools.cycle[str]:
    return itertools.cycle([f"{n:06d}" for n in range(1000, 1100) if f"{n:06d}" != right])


async def case_row(hub: Hub) -> ApplicantCase:
    async with hub.db.session() as session:
        case = await session.scalar(select(ApplicantCase).where(ApplicantCase.reference == REFERENCE))
    assert case is not None
    return case


async def linked_addresses(hub: Hub) -> list[tuple[str, str]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.channel, Endpoint.address)
            .join(CaseEndpoint, CaseEndpoint.endpoint_id == Endpoint.id)
            .join(ApplicantCase, ApplicantCase.id == CaseEndpoint.case_id)
            .where(ApplicantCase.reference == REFERENCE)
        )
    return sorted((channel, address) for channel, address in rows.all())


async def forget_redis_limits(hub: Hub) -> None:
    """What a Redis loss (or the window's end) does: every counter gone."""
    assert hub.redis is not None
    keys = [key async for key in hub.redis.scan_iter(f"{hub.settings.redis.key_prefix}:limit:*")]
    assert keys, "the limits are counted in Redis"
    await hub.redis.delete(*keys)


# ---------------------------------------------------------------------------------------------------------


async def test_a_thousand_guesses_from_fifty_senders_check_ten_pins_and_lock_the_case(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = wrong_pins(scene.pin)
    names = ("telegram", "sms", "matrix")
    records = [
        (scene.hubs[i % 2], guess(names[n % 3], sender(names[n % 3], n), next(pins)))
        for i, n in enumerate(n for _ in range(20) for n in range(50))
    ]
    assert len(records) == 1000 and len({(r.channel, r.sender) for _, r in records}) == 50
    with capture_logs() as logs:
        # A logger not yet used: one another test in this process used may be cached past capture_logs.
        monkeypatch.setattr(applicants, "log", structlog.get_logger("hub"))
        await asyncio.gather(*(answer(hub, record) for hub, record in records))

    # Exactly the case's limit of PINs was compared (five per sender would have let 250 through).
    assert scene.checks == 10
    assert scene.texts() == Counter({WRONG: 10, LIMITED: 990})
    case = await case_row(scene.hubs[0])
    assert case.pin_failures == 10 and case.pin_locked_at is not None
    # The office is told once, at warning level, without the reference in full.
    assert [entry for entry in logs if entry["event"] == "case_pin_locked"] == [
        {
            "event": "case_pin_locked",
            "log_level": "warning",
            "office": "kota-pekalongan",
            "case_id": case.id,
            "reference": "33*******42",
            "wrong_pins": 10,
            "advice": "the applicant can still link a chat with the receipt's code",
        }
    ]

    # The lock lives in the database: with Redis' counters gone, the right PIN opens nothing, from a
    # chat that never guessed, in Indonesian and in English.
    await forget_redis_limits(scene.hubs[0])
    scene.replies.clear()
    await answer(scene.hubs[1], guess("telegram", "839999", scene.pin))
    await answer(scene.hubs[0], guess("sms", "+6281239999999", scene.pin, locale="en"))
    assert scene.replies == [("telegram", "839999", LOCKED), ("sms", "+6281239999999", LOCKED_EN)]
    assert scene.checks == 10
    assert await linked_addresses(scene.hubs[0]) == []

    # The applicant keeps their case through the receipt's code.
    scene.replies.clear()
    start = Inbound(
        channel="telegram",
        kind="command",
        address="839999",
        sender="839999",
        command="/start",
        args=(scene.link_code,),
    )
    await answer(scene.hubs[1], start)
    assert scene.replies == [("telegram", "839999", LINKED)]
    assert await linked_addresses(scene.hubs[0]) == [("telegram", "839999")]


async def test_forty_guesses_from_one_sender_check_five_pins(scene: Scene) -> None:
    """One Matrix user guessing from forty rooms at once (answered privately) on two hubs."""
    pins = wrong_pins(scene.pin)
    records = [
        (scene.hubs[n % 2], guess("matrix", "@penebak:matrix.test", next(pins), room=f"!r{n}:matrix.test"))
        for n in range(40)
    ]
    await asyncio.gather(*(answer(hub, record) for hub, record in records))

    assert scene.checks == 5
    private = [text for _, to, text in scene.replies if to == "@penebak:matrix.test"]
    assert Counter(private) == Counter({WRONG: 5, LIMITED: 35})
    case = await case_row(scene.hubs[0])
    assert case.pin_failures == 5 and case.pin_locked_at is None

    # Another person with the right PIN is not held back by this sender, is linked, and gives back
    # nothing of the case's count (a right PIN counts no failure).
    scene.replies.clear()
    await answer(scene.hubs[1], guess("telegram", "830777", scene.pin))
    assert scene.replies == [
        (
            "telegram",
            "830777",
            "Permohonan KK 3375-KK-0042: diterima. Anda akan menerima kabar berikutnya di sini.",
        )
    ]
    assert await linked_addresses(scene.hubs[0]) == [("telegram", "830777")]
    assert (await case_row(scene.hubs[0])).pin_failures == 5
    assert scene.checks == 6


async def test_the_redis_keys_never_name_the_sender(scene: Scene) -> None:
    hub = scene.hubs[0]
    await answer(hub, guess("sms", "+6281230000077", "000000"))
    assert hub.redis is not None
    keys = [key.decode() async for key in hub.redis.scan_iter(f"{hub.settings.redis.key_prefix}:*")]
    limits = [key for key in keys if ":limit:pin-" in key]
    assert len(limits) == 2, keys
    assert not [key for key in keys if "6281230000077" in key or REFERENCE in key]


async def test_inbound_sms_per_number_is_counted_once_for_every_api_process(scene: Scene) -> None:
    """Two API processes' SMS adapters, sharing the hub's count: ten SMS a minute from one number in all,
    not ten per process; the count is kept under a keyed hash of the number."""
    hub = scene.hubs[0]
    assert hub.redis is not None
    count = shared_count(hub.redis, hub.settings.redis.key_prefix, hub.secret)
    adapters = []
    for _ in range(2):
        adapter = SmsChannel([], public_url="http://hub.test", dlr_secret="d", mo_secret="mo-secret-1")
        adapter.use_shared_limits(count)
        adapters.append(adapter)
    query = {"kind": "mo", "k": "mo-secret-1", "from": "081230000055", "text": f"LACAK {REFERENCE} 123456"}
    results = await asyncio.gather(
        *(adapters[n % 2].handle_webhook(WebhookRequest({}, query, b"")) for n in range(30))
    )
    assert sum(len(records) for records, _ in results) == 10
    assert {response.status for _, response in results} == {200}  # the gateway must not retry
    keys = [key.decode() async for key in hub.redis.scan_iter(f"{hub.settings.redis.key_prefix}:*")]
    assert len([key for key in keys if ":limit:sms-mo:" in key]) == 1
    assert not [key for key in keys if "81230000055" in key]


async def test_without_redis_the_case_lock_alone_lets_ten_pins_be_checked(scene: Scene) -> None:
    """Redis lost: no window counts, and the database's count still stops the guessing at ten."""
    connections = [hub.redis for hub in scene.hubs]
    pins = wrong_pins(scene.pin)
    records = [(scene.hubs[n % 2], guess("telegram", sender("telegram", n), next(pins))) for n in range(100)]
    try:
        for hub in scene.hubs:
            hub.redis = None
        await asyncio.gather(*(answer(hub, record) for hub, record in records))
    finally:
        for hub, redis in zip(scene.hubs, connections, strict=True):
            hub.redis = redis

    assert scene.checks == 10
    assert scene.texts() == Counter({WRONG: 10, LOCKED: 90})
    assert (await case_row(scene.hubs[0])).pin_locked_at is not None
