"""A scheduled announcement becomes ``published`` when its message starts (plan job or reconciler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub import announcements, subscriptions
from hub.clock import utcnow
from hub.console import queries
from hub.delivery import messages_to_plan, plan_message
from hub.store.models import Announcement, Message


async def _scheduled(hub):
    await subscriptions.subscribe(hub, "kota-serang", "email", "warga@mail.example.com", confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text",
        topics=["kota-serang"],
        data={"title": "Uji", "text": "Pesan uji."},
        publish_at=datetime.now(UTC) + timedelta(hours=1),
    )
    ann, message = await announcements.create(hub, req, publish=True)
    assert (ann.state, message.state) == ("scheduled", "scheduled")
    async with hub.db.transaction() as session:  # its time comes
        (await session.get(Message, message.id)).send_at = utcnow() - timedelta(seconds=1)
    return ann, message


async def _states(hub, ann, message):
    async with hub.db.session() as session:
        return (await session.get(Announcement, ann.id)).state, (await session.get(Message, message.id)).state


async def test_the_plan_job_publishes_the_announcement_it_starts(hub):
    ann, message = await _scheduled(hub)
    await plan_message({"hub": hub}, message.id)
    assert await _states(hub, ann, message) == ("published", "planned")
    async with hub.db.session() as session:
        stored = await session.get(Announcement, ann.id)
    assert (await queries.phase_of(hub, stored))[0] == "sending"  # one email queued, not yet sent
    board = await queries.dashboard(hub, {"kota-serang"})
    assert board["counts"]["scheduled"] == 0 and board["counts"]["sending"] == 1


async def test_the_reconciler_publishes_the_announcement_it_starts(hub):
    ann, message = await _scheduled(hub)
    started = await messages_to_plan(hub)
    assert [m for m, _, _ in started] == [message.id]
    assert await _states(hub, ann, message) == ("published", "planning")


async def test_a_cancelled_announcement_stays_cancelled_when_its_time_comes(hub):
    ann, message = await _scheduled(hub)
    async with hub.db.transaction() as session:  # cancelled, its message not yet (cancel's two steps)
        (await session.get(Announcement, ann.id)).state = "cancelled"
    await messages_to_plan(hub)
    assert (await _states(hub, ann, message))[0] == "cancelled"
