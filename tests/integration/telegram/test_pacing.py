"""Shared pacing: two worker processes together stay under the bot's limits, and urgent sends overtake."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from hub import announcements, applicants, subscriptions
from hub.context import Hub
from tests.fakes.telegram_api import FakeTelegram, eventually
from tests.integration.telegram.conftest import Workers, wait_done

PEOPLE = [930_000 + n for n in range(120)]
BOTH = PEOPLE[::2]  # these follow two offices: two broadcasts each, one second apart at least
APPLICANT = 939_999


def busiest_second(times: list[float]) -> int:
    """The most sends inside any window of one second (how the fake, and Telegram, count)."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_two_workers_share_the_limits_and_urgent_overtakes_bulk(
    worker_hub: Hub, fake: FakeTelegram, workers: Workers
) -> None:
    hub = worker_hub
    for user in [*PEOPLE, APPLICANT]:
        fake.add_private(user)
    for user in PEOPLE:
        await subscriptions.subscribe(hub, "kota-pekalongan", "telegram", str(user), confirmed=True)
    for user in BOTH:
        await subscriptions.subscribe(hub, "kota-serang", "telegram", str(user), confirmed=True)
    await applicants.open_case(
        hub,
        "kota-pekalongan",
        applicants.CaseInput(
            reference="3375-AKTA-0007",
            document="akta kelahiran",
            contacts=[applicants.Contact(channel="telegram", address=str(APPLICANT))],
        ),
    )

    message_ids = []
    for topic in ("kota-pekalongan", "kota-serang"):
        req = announcements.AnnouncementInput(
            template="free_text",
            topics=[topic],
            data={"title": f"Info {topic}", "text": "Pelayanan dibatasi."},
        )
        _, message = await announcements.create(hub, req, publish=True)
        assert message is not None
        message_ids.append(message.id)

    # Mid-broadcast, the office marks an application ready: it must not wait for the broadcast to end.
    await eventually(lambda: len(fake.messages()) >= 45, timeout=20)
    posted = time.monotonic()
    update_id = await applicants.post_update(
        hub,
        "kota-pekalongan",
        "3375-AKTA-0007",
        applicants.UpdateInput(status="ready", pickup_place="loket 2 Dindukcapil Kota Pekalongan"),
    )
    await wait_done(hub, [*message_ids, update_id], workers, timeout=40)
    await asyncio.sleep(0.2)

    (urgent,) = fake.messages(APPLICANT)
    assert "siap diambil di loket 2" in urgent.visible_text
    bulk = [m for m in fake.messages() if m.chat_id != APPLICANT]
    assert len(bulk) == len(PEOPLE) + len(BOTH)
    last_bulk = max(m.at for m in bulk)
    assert urgent.at - posted < 3.0, f"urgent update took {urgent.at - posted:.2f}s"
    assert last_bulk - urgent.at > 1.0, "the broadcast was already over: nothing was overtaken"

    # No 429 at all, and the record agrees: never more than 30 in a second, never 2 in a second to a chat,
    # though two processes sent, and half the chats got one message from each broadcast.
    assert fake.too_many_requests == 0, fake.errors_for("sendMessage")
    everything = [m.at for m in fake.messages()]
    assert busiest_second(everything) <= 30
    per_chat: dict[int | str, list[float]] = defaultdict(list)
    for m in fake.messages():
        per_chat[m.chat_id].append(m.at)
    assert all(busiest_second(times) == 1 for times in per_chat.values())
    assert {len(times) for chat, times in per_chat.items() if chat in BOTH} == {2}

    # Paced, not starved: close to the pace the hub was given (one send per 40 ms) while the broadcast ran.
    assert busiest_second(everything) >= 20
