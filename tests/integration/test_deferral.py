"""A provider's quota (``RetryLater(quota=True)``: a messaging limit per moving 24 h) defers, never fails.

Retries of the provider's trouble end at ``retry_horizon_seconds`` after the send time (a gateway down
for a day: tests/integration/test_sending.py); a used-up quota is no trouble but a turn to wait for, so
its deferrals go on past the horizon until the window frees, and only valid-until ends them. Staff see
the deferred deliveries, why, and when the next try is, in the status API and on the console.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from babel.dates import format_datetime
from sqlalchemy import select

from channels.base import RetryLater
from channels.testing import ScriptedChannel
from hub import announcements, delivery, subscriptions
from hub.api.app import create_app
from hub.clock import to_local
from hub.delivery import drain, plan_message, send_batch
from hub.store.models import Delivery, Endpoint, Message
from tests.conftest import make_settings, start_hub
from tests.console import make_staff, sign_in

LIMIT = "messaging limit reached: 250 recipients per 24 h; continues when the window frees"


@pytest.fixture
async def dhub(database, redis_url, smtp):
    url, schema = database
    channel = ScriptedChannel()
    settings = make_settings(url, redis_url, smtp[1], schema, retry_base_seconds=0.05, retry_max_seconds=0.2)
    hub = await start_hub(settings, extra_channels={"scripted": channel})
    hub.scripted = channel  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


async def _broadcast(hub, addresses: list[str], **times) -> int:
    for address in addresses:
        await subscriptions.subscribe(hub, "kota-serang", "scripted", address, confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-serang"], data={"title": "Uji", "text": "Pesan uji."}, **times
    )
    _, message = await announcements.create(hub, req, publish=True)
    return message.id


async def _states(hub, message_id: int) -> dict[str, tuple[str, str | None]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Endpoint.address, Delivery.state, Delivery.error)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.message_id == message_id)
        )
        return {r.address: (r.state, r.error) for r in rows.all()}


async def test_a_quota_deferral_goes_on_past_the_retry_horizon(dhub):
    dhub.settings.queue.retry_horizon_seconds = 0.3
    quota = RetryLater(LIMIT, 0.2, provider=True, quota=True)
    dhub.scripted.script("tier", *[quota] * 4)  # about 0.8 s of deferrals: well past the horizon
    dhub.scripted.script("down", *[RetryLater("gateway down", 0.2, provider=True)] * 4)
    message_id = await _broadcast(dhub, ["tier", "down"])
    await drain(dhub)

    assert await _states(dhub, message_id) == {
        "tier": ("sent", None),
        "down": ("failed", "gave up at the message's retry deadline: gateway down"),
    }
    assert [item.address for item in dhub.scripted.sent] == ["tier"]


async def test_valid_until_ends_a_quota_deferral(dhub):
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    dhub.scripted.script("tier", *[RetryLater(LIMIT, 0.3, provider=True, quota=True)] * 50)
    message_id = await _broadcast(dhub, ["tier"], valid_until=until)
    await drain(dhub)

    assert await _states(dhub, message_id) == {"tier": ("skipped", "message expired (valid-until passed)")}
    assert dhub.scripted.sent == []


async def test_status_and_console_show_what_waits_and_why(dhub):
    later = RetryLater(LIMIT, 3600, provider=True, quota=True)
    for address in ("w1", "w2", "w3"):
        dhub.scripted.script(address, later)
    message_id = await _broadcast(dhub, ["w1", "w2", "w3", "ok"])
    await plan_message({"hub": dhub}, message_id)
    async with dhub.db.session() as session:
        ids = list(
            (await session.scalars(select(Delivery.id).where(Delivery.message_id == message_id))).all()
        )
    assert await send_batch({"hub": dhub}, "scripted", ids) == {"retrying": 3, "sent": 1}
    async with dhub.db.session() as session:
        next_at = min(
            (
                await session.scalars(select(Delivery.next_attempt_at).where(Delivery.state == "retrying"))
            ).all()
        )

    status = await delivery.status(dhub, message_id)
    assert status["progress"] == "sending"
    assert status["deferred"] == [
        {"channel": "scripted", "reason": LIMIT, "count": 3, "next_attempt_at": next_at.isoformat() + "Z"}
    ]

    _, secret = await make_staff(
        dhub, "humas@serang.example.go.id", "viewer", "kota-serang", "sandi-rahasia-panjang"
    )
    transport = httpx.ASGITransport(app=create_app(dhub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        assert (
            await sign_in(client, "humas@serang.example.go.id", "sandi-rahasia-panjang", secret)
        ).status_code == 303
        async with dhub.db.session() as session:
            announcement_id = await session.scalar(
                select(Message.announcement_id).where(Message.id == message_id)
            )
        page = (await client.get(f"/console/pengumuman/{announcement_id}")).text
    local = format_datetime(to_local(next_at, "Asia/Jakarta"), "d MMM y HH.mm", locale="id_ID")
    assert (
        "<h3>Menunggu dicoba lagi</h3>\n"
        '  <p class="hint">Batas atau gangguan penyedia menahan pesan ini; '
        "pesan terkirim sendiri begitu diizinkan.</p>\n"
        '  <table><thead><tr><th scope="col">Kanal</th><th scope="col">Alasan</th><th scope="col">Jumlah</th>'
        '<th scope="col">Percobaan berikutnya</th></tr></thead>\n'
        f"  <tbody><tr><td>scripted</td><td>{LIMIT}</td><td>3</td><td>{local} WIB</td></tr></tbody></table>"
    ) in page
