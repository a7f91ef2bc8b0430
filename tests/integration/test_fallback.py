"""``RecipientGone(fallback=...)``: the same message once more, on the named channel, to the same number.

A chat app's "this number is no user of ours" names SMS as the fallback (issue 13); here two scripted
adapters stand in, one named ``chat`` and one named ``sms`` (so the SMS templates and layout render
its messages), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import delete, select, update

from channels.base import Inbound, RecipientGone
from channels.testing import ScriptedChannel
from hub import announcements, subscriptions
from hub.delivery import drain, plan_message, send_batch
from hub.delivery.fallback import fall_back
from hub.inbound import apply_receipt
from hub.store.models import Delivery, Endpoint, Rendering
from tests.conftest import ROOT, make_settings, start_hub
from tests.unit.test_golden import EXAMPLES

#: What the Pekalongan office announced (the golden files' own example), sent to its topic.
TOPIC = "kota-pekalongan"
NOT_A_USER = "message undeliverable (131026)"


@pytest.fixture
async def fhub(database, redis_url, smtp):
    url, schema = database
    chat, sms = ScriptedChannel(name="chat"), ScriptedChannel(name="sms")
    settings = make_settings(url, redis_url, smtp[1], schema, retry_base_seconds=0.05, retry_max_seconds=0.2)
    hub = await start_hub(settings, extra_channels={"chat": chat, "sms": sms})
    hub.chat, hub.sms = chat, sms  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        await hub.close()


def _golden_sms_text() -> str:
    """The text part of the golden SMS rendering of the example (tests/golden/...)."""
    path = ROOT / "tests" / "golden" / "announcements" / "pekalongan_free_text" / "sms.id.txt"
    return path.read_text(encoding="utf-8").split("----- text\n", 1)[1].removesuffix("\n")


async def _announce(hub):
    _, office, data, _ = EXAMPLES["pekalongan_free_text"]
    assert office == TOPIC
    req = announcements.AnnouncementInput(template="free_text", topics=[TOPIC], data=data)
    _, message = await announcements.create(hub, req, publish=True)
    return message


async def _sms_endpoint(hub, address: str, *, active: bool = True, topic: str = "kota-serang") -> None:
    """The citizen registered this number for SMS too (for another office's news)."""
    await subscriptions.subscribe(hub, topic, "sms", address, confirmed=True)
    if not active:
        async with hub.db.transaction() as session:
            await session.execute(
                update(Endpoint)
                .where(Endpoint.channel == "sms", Endpoint.address == address)
                .values(active=False, deactivated_reason="bounced")
            )


async def _rows(hub, message_id: int) -> dict[tuple[str, str], tuple[str, str | None]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Delivery.channel, Endpoint.address, Delivery.state, Delivery.error)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(Delivery.message_id == message_id)
        )
        return {(r.channel, r.address): (r.state, r.error) for r in rows.all()}


async def test_gone_with_a_fallback_sends_once_to_the_same_number_on_that_channel(fhub):
    cases = {
        "+62811": ("sms", True),  # an active SMS endpoint with the same number: the fallback goes there
        "+62812": ("sms", False),  # the SMS endpoint was deactivated (bounced): nothing
        "+62813": ("sms", None),  # no SMS endpoint with this number (another number has one): nothing
        "+62814": (None, True),  # gone without a fallback: nothing, though an SMS endpoint exists
        "+62815": ("fax", True),  # the named channel is not enabled: nothing
        "+62816": ("sms", "same topic"),  # the SMS endpoint follows the topic itself: its own one send
    }
    for address, (fallback, sms) in cases.items():
        await subscriptions.subscribe(fhub, TOPIC, "chat", address, confirmed=True)
        fhub.chat.script(address, RecipientGone(NOT_A_USER, fallback=fallback))
        if sms == "same topic":
            await _sms_endpoint(fhub, address, topic=TOPIC)
        elif sms is not None:
            await _sms_endpoint(fhub, address, active=sms)
    await _sms_endpoint(fhub, "+62899")
    message = await _announce(fhub)
    await drain(fhub)

    sent = Counter(item.address for item in fhub.sms.sent)
    assert sent == {"+62811": 1, "+62816": 1}
    fallback = next(item for item in fhub.sms.sent if item.address == "+62811")
    assert fallback.content.text == _golden_sms_text()  # rendered for SMS, not the chat's text
    assert fallback.kind == "announcement"
    rows = await _rows(fhub, message.id)
    assert rows[("chat", "+62811")] == ("gone", f"{NOT_A_USER}; sent by sms instead")
    assert rows[("sms", "+62811")] == ("sent", None)
    assert rows[("sms", "+62816")] == ("sent", None)
    for address in ("+62812", "+62813", "+62814", "+62815", "+62816"):
        assert rows[("chat", address)] == ("gone", NOT_A_USER)
    assert {key for key in rows if key[0] == "sms"} == {("sms", "+62811"), ("sms", "+62816")}

    # The same outcome written again (a retried write, a second report) makes nothing twice.
    async with fhub.db.session() as session:
        gone_id = await session.scalar(
            select(Delivery.id)
            .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
            .where(
                Delivery.message_id == message.id, Endpoint.channel == "chat", Endpoint.address == "+62811"
            )
        )
    async with fhub.db.transaction() as session:
        again = await fall_back(
            fhub, session, [(gone_id, RecipientGone(NOT_A_USER, fallback="sms"))], message.send_at
        )
    assert again == []
    assert len(await _rows(fhub, message.id)) == len(rows)


async def test_a_fallback_that_fails_too_does_not_bounce_back(fhub):
    """SMS naming the chat app back finds the message already there: no loop, no second send."""
    await subscriptions.subscribe(fhub, TOPIC, "chat", "+62821", confirmed=True)
    await _sms_endpoint(fhub, "+62821")
    fhub.chat.script(
        "+62821", RecipientGone(NOT_A_USER, fallback="sms"), RecipientGone("again", fallback="sms")
    )
    fhub.sms.script("+62821", RecipientGone("absent subscriber", fallback="chat"))
    message = await _announce(fhub)
    await drain(fhub)

    rows = await _rows(fhub, message.id)
    assert rows == {
        ("chat", "+62821"): ("gone", f"{NOT_A_USER}; sent by sms instead"),
        ("sms", "+62821"): ("gone", "absent subscriber"),
    }
    assert [item.address for item in fhub.chat.calls] == ["+62821"]
    assert [item.address for item in fhub.sms.calls] == ["+62821"]


async def test_the_fallback_is_queued_with_the_outcome(fhub):
    """No reconciler pass needed: the new row is enqueued as soon as the outcome is written."""
    await subscriptions.subscribe(fhub, TOPIC, "chat", "+62831", confirmed=True)
    await _sms_endpoint(fhub, "+62831")
    fhub.chat.script("+62831", RecipientGone(NOT_A_USER, fallback="sms"))
    message = await _announce(fhub)
    await plan_message({"hub": fhub}, message.id)
    async with fhub.db.session() as session:
        ids = list(
            (await session.scalars(select(Delivery.id).where(Delivery.message_id == message.id))).all()
        )
    before = await fhub.redis.queued_jobs(queue_name=fhub.queue.name("bulk"))

    assert await send_batch({"hub": fhub}, "chat", ids) == {"gone": 1}

    async with fhub.db.session() as session:
        new = (
            await session.execute(
                select(Delivery.id, Delivery.state).where(
                    Delivery.message_id == message.id, Delivery.channel == "sms"
                )
            )
        ).one()
    assert new.state == "queued"
    jobs = await fhub.redis.queued_jobs(queue_name=fhub.queue.name("bulk"))
    added = [job.args for job in jobs if job not in before]
    assert added == [("sms", [new.id])]
    assert await send_batch({"hub": fhub}, "sms", [new.id]) == {"sent": 1}
    assert fhub.sms.sent[0].content.text == _golden_sms_text()


async def test_a_message_rendered_before_the_channel_existed_is_rendered_for_it(fhub):
    """As if SMS was enabled after publishing: the fallback renders the announcement for SMS first."""
    await subscriptions.subscribe(fhub, TOPIC, "chat", "+62841", confirmed=True)
    await _sms_endpoint(fhub, "+62841")
    fhub.chat.script("+62841", RecipientGone(NOT_A_USER, fallback="sms"))
    message = await _announce(fhub)
    async with fhub.db.transaction() as session:
        await session.execute(
            delete(Rendering).where(Rendering.message_id == message.id, Rendering.channel == "sms")
        )
    await drain(fhub)

    assert [(item.address, item.content.text) for item in fhub.sms.sent] == [("+62841", _golden_sms_text())]
    async with fhub.db.session() as session:
        locales = set(
            (
                await session.scalars(
                    select(Rendering.locale).where(
                        Rendering.message_id == message.id, Rendering.channel == "sms"
                    )
                )
            ).all()
        )
    assert locales == {"id", "en"}


async def test_no_fallback_for_a_confirmation(fhub):
    """A confirmation's link confirms the address that was asked; another channel's must not get it."""
    await _sms_endpoint(fhub, "+62851")
    fhub.chat.script("+62851", RecipientGone(NOT_A_USER, fallback="sms"))
    result = await subscriptions.subscribe(fhub, TOPIC, "chat", "+62851")
    assert result.confirmation_message_id is not None
    async with fhub.db.transaction() as session:  # even with an SMS text at hand (rendered for chat only)
        for r in (await session.scalars(select(Rendering))).all():
            session.add(Rendering(message_id=r.message_id, channel="sms", locale=r.locale, text=r.text))
    await drain(fhub)

    rows = await _rows(fhub, result.confirmation_message_id)
    assert rows == {("chat", "+62851"): ("gone", NOT_A_USER)}
    assert fhub.sms.calls == []


async def test_a_late_report_that_the_number_is_gone_falls_back_once(fhub):
    """The provider took the send, then reported the number unreachable (a status webhook)."""
    for address in ("+62861", "+62862"):
        await subscriptions.subscribe(fhub, TOPIC, "chat", address, confirmed=True)
        await _sms_endpoint(fhub, address)
    message = await _announce(fhub)
    await drain(fhub)
    async with fhub.db.session() as session:
        ids = dict(
            (
                await session.execute(
                    select(Endpoint.address, Delivery.id)
                    .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                    .where(Delivery.message_id == message.id, Endpoint.channel == "chat")
                )
            ).all()
        )

    def report(address: str, status: str) -> Inbound:
        return Inbound(
            channel="chat",
            kind="receipt",
            delivery_id=ids[address],
            receipt_status=status,  # type: ignore[arg-type]
            text=NOT_A_USER if status == "gone" else "",
            fallback="sms" if status == "gone" else None,
        )

    assert await apply_receipt(fhub, report("+62861", "gone"))
    assert not await apply_receipt(fhub, report("+62861", "gone"))  # a second report: nothing twice
    assert await apply_receipt(fhub, report("+62862", "delivered"))
    assert not await apply_receipt(fhub, report("+62862", "gone"))  # never after it arrived
    await drain(fhub)

    assert [item.address for item in fhub.sms.sent] == ["+62861"]
    assert fhub.sms.sent[0].content.text == _golden_sms_text()
    rows = await _rows(fhub, message.id)
    assert rows[("chat", "+62861")] == ("gone", f"{NOT_A_USER}; sent by sms instead")
    assert rows[("chat", "+62862")] == ("delivered", None)
    assert rows[("sms", "+62861")] == ("sent", None)
    assert ("sms", "+62862") not in rows
    async with fhub.db.session() as session:
        active = dict(
            (
                await session.execute(
                    select(Endpoint.address, Endpoint.active).where(Endpoint.channel == "chat")
                )
            ).all()
        )
    assert active == {"+62861": False, "+62862": True}
