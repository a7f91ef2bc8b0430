"""The outbox's promises, on SQLite and PostgreSQL alike: nothing lost, nothing doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from channels.base import Channel, Moved, Outbound, Outcome, Pacer, RecipientGone, Rejected, RetryLater, Sent
from hub import announcements, delivery, subscriptions
from hub.clock import utcnow
from hub.delivery import drain, plan_message, send_batch
from hub.store.models import Delivery, Endpoint
from tests.conftest import make_settings, start_hub


class Scripted(Channel):
    """An adapter whose outcomes a test chooses per address (a double of an adapter, not of a service)."""

    name: ClassVar[str] = "scripted"

    def __init__(self) -> None:
        self.script: dict[str, list[Outcome]] = {}
        self.sent: list[tuple[int, str, str]] = []

    @classmethod
    def from_settings(cls, settings: Any, *, public_url: str) -> Scripted:
        return cls()

    def normalize_address(self, raw: str) -> str:
        return raw.strip()

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            queue = self.script.get(item.address)
            outcome = queue.pop(0) if queue else Sent(f"p{item.delivery_id}")
            if isinstance(outcome, Sent):
                self.sent.append((item.delivery_id, item.address, item.content.text))
            yield item.delivery_id, outcome


@pytest.fixture
async def shub(database, redis_url, smtp):
    url, schema = database
    channel = Scripted()
    hub = await start_hub(
        make_settings(url, redis_url, smtp[1], schema, retry_base_seconds=0.05, retry_max_seconds=0.2),
        extra_channels={"scripted": channel},
    )
    hub.scripted = channel  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


async def _subscribe(hub, addresses, topic="kota-serang"):
    for address in addresses:
        await subscriptions.subscribe(hub, topic, "scripted", address, confirmed=True)


async def _announce(hub, topic="kota-serang", **extra):
    req = announcements.AnnouncementInput(
        template="free_text", topics=[topic], data={"title": "Uji", "text": "Pesan uji."}, **extra
    )
    return await announcements.create(hub, req, publish=True)


async def _states(hub, message_id):
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address, Delivery.state, Delivery.error)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.message_id == message_id)
        )
        return {a: (s, e) for a, s, e in rows.all()}


async def test_fanout_twice_creates_nothing_twice(shub):
    await _subscribe(shub, [f"u{i}" for i in range(50)])
    _, message = await _announce(shub)
    ctx = {"hub": shub}
    assert await plan_message(ctx, message.id) == 50
    async with shub.db.transaction() as session:  # as if arq re-ran the job after a crash
        m = await session.get(type(message), message.id)
        m.state, m.plan_cursor = "planning", 0
    assert await plan_message(ctx, message.id) == 0
    await drain(shub)
    assert len(shub.scripted.sent) == 50
    assert len({a for _, a, _ in shub.scripted.sent}) == 50


async def test_a_second_run_of_a_send_job_sends_nothing(shub):
    await _subscribe(shub, ["a", "b", "c"])
    _, message = await _announce(shub)
    await plan_message({"hub": shub}, message.id)
    async with shub.db.session() as session:
        ids = list(
            (await session.execute(select(Delivery.id).where(Delivery.message_id == message.id))).scalars()
        )
    first = await send_batch({"hub": shub}, "scripted", ids)
    second = await send_batch({"hub": shub}, "scripted", ids)
    assert first == {"sent": 3}
    assert second == {"claimed": 0, "skipped": 0}
    assert len(shub.scripted.sent) == 3


async def test_outcomes_move_states_forward(shub):
    await _subscribe(shub, ["ok", "slow", "blocked", "bad", "moved", "flaky"])
    shub.scripted.script = {
        "slow": [RetryLater("429", delay=0.1)],
        "blocked": [RecipientGone("bot was blocked by the user")],
        "bad": [Rejected("message is too long")],
        "moved": [Moved("moved-new")],
        "flaky": [RetryLater("503")] * 20,
    }
    _, message = await _announce(shub)
    await drain(shub)
    states = await _states(shub, message.id)
    assert states["ok"][0] == "sent"
    assert states["slow"][0] == "sent"  # retried after the provider's own delay
    assert states["blocked"] == ("gone", "bot was blocked by the user")
    assert states["bad"] == ("failed", "message is too long")
    assert states["moved-new"][0] == "sent"  # the endpoint now has its new address, and got the message
    assert states["flaky"][0] == "failed" and "gave up after 8 attempts" in states["flaky"][1]
    async with shub.db.session() as session:
        blocked = await session.scalar(select(Endpoint).where(Endpoint.address == "blocked"))
        assert blocked.active is False
    # A deactivated endpoint is never tried again.
    shub.scripted.sent.clear()
    shub.scripted.script.clear()
    _, again = await _announce(shub)
    await drain(shub)
    assert "blocked" not in {a for _, a, _ in shub.scripted.sent}
    status = await delivery.status(shub, again.id)
    assert status["totals"]["sent"] == 5 and status["done"]


async def test_cancel_skips_everything_still_pending(shub):
    await _subscribe(shub, [f"u{i}" for i in range(20)])
    ann, message = await _announce(shub)
    await plan_message({"hub": shub}, message.id)
    skipped = await announcements.cancel(shub, ann.id)
    await drain(shub)
    assert skipped == 20
    assert shub.scripted.sent == []
    assert (await delivery.status(shub, message.id))["totals"]["skipped"] == 20


async def test_nothing_goes_out_after_valid_until(shub):
    await _subscribe(shub, ["late"])
    _, message = await _announce(shub, valid_until=datetime.now(UTC) + timedelta(seconds=1))
    await plan_message({"hub": shub}, message.id)
    async with shub.db.transaction() as session:  # time passes before a worker gets to it
        m = await session.get(type(message), message.id)
        m.not_after = utcnow() - timedelta(seconds=1)
    await drain(shub)
    assert shub.scripted.sent == []
    assert (await _states(shub, message.id))["late"] == ("skipped", "message expired (valid-until passed)")


async def test_scheduled_message_waits_for_its_time(shub):
    await _subscribe(shub, ["x"])
    ann, message = await _announce(shub, publish_at=datetime.now(UTC) + timedelta(hours=1))
    assert ann.state == "scheduled" and message.state == "scheduled"
    await drain(shub)
    assert shub.scripted.sent == []
    async with shub.db.transaction() as session:
        m = await session.get(type(message), message.id)
        m.send_at = utcnow() - timedelta(seconds=1)
    await drain(shub)
    assert [a for _, a, _ in shub.scripted.sent] == ["x"]


async def test_correction_reaches_the_original_recipients_still_subscribed(shub):
    await _subscribe(shub, ["r1", "r2", "blocked"])
    shub.scripted.script = {"blocked": [RecipientGone("blocked")]}
    ann, _ = await _announce(shub)
    await drain(shub)
    await _subscribe(shub, ["newcomer"])  # subscribed after the original went out
    await subscriptions.unsubscribe(shub, "scripted", "r2")  # left since: the correction must not follow
    shub.scripted.sent.clear()
    req = announcements.AnnouncementInput(
        template="free_text", data={"title": "Ralat", "text": "Jam yang benar."}
    )
    await announcements.correct(shub, ann.id, req)
    await drain(shub)
    assert sorted(a for _, a, _ in shub.scripted.sent) == ["r1"]
    assert all("Jam yang benar." in text for _, _, text in shub.scripted.sent)


async def test_region_reaches_every_office_below_it(shub):
    await _subscribe(shub, ["serang-kota"], topic="kota-serang")
    await _subscribe(shub, ["serang-kab"], topic="kabupaten-serang/ktp-el")
    await _subscribe(shub, ["pekalongan"], topic="kota-pekalongan")
    req = announcements.AnnouncementInput(
        template="free_text", regions=["36"], data={"title": "T", "text": "x"}
    )
    await announcements.create(shub, req, publish=True)
    await drain(shub)
    assert sorted(a for _, a, _ in shub.scripted.sent) == ["serang-kab", "serang-kota"]


async def test_an_endpoint_on_two_targeted_topics_gets_one_message(shub):
    await _subscribe(shub, ["both"], topic="kota-serang")
    await _subscribe(shub, ["both"], topic="kota-serang/ktp-el")
    await _announce(shub)
    await drain(shub)
    assert [a for _, a, _ in shub.scripted.sent] == ["both"]


async def test_bad_input_creates_nothing(shub):
    bad = [
        ({"template": "nope", "topics": ["kota-serang"]}, "unknown template 'nope'"),
        (
            {"template": "free_text", "topics": ["nowhere"], "data": {"title": "a", "text": "b"}},
            "unknown topic",
        ),
        (
            {"template": "hours_changed", "topics": ["kota-serang"], "data": {"hours": {"monday": "8-11"}}},
            "hours for 'monday' must look like 08:00-11:00",
        ),
        (
            {"template": "link", "topics": ["kota-serang"], "data": {"link_name": "E-pusda"}},
            "data for template 'link'",
        ),
        (
            {
                "template": "free_text",
                "topics": ["kota-serang"],
                "data": {"title": "a", "text": "b"},
                "valid_from": datetime.now(UTC) + timedelta(days=2),
                "valid_until": datetime.now(UTC) + timedelta(days=1),
            },
            "valid-until must be after valid-from",
        ),
    ]
    for fields, expected in bad:
        with pytest.raises(announcements.AnnouncementError, match=expected):
            await announcements.create(shub, announcements.AnnouncementInput(**fields), publish=True)
    async with shub.db.session() as session:
        assert (await session.execute(select(Delivery))).first() is None
    assert await shub.queue.depth("bulk") == 0
