"""Webhooks as Meta sends them (through the loopback Cloud API): verification, signatures, statuses,
citizens' messages and button presses, each turned into the hub's neutral records."""

from __future__ import annotations

import json

import pytest

from channels.base import Content, Inbound, NoPacing, Outbound, Sent, WebhookRejected, WebhookRequest
from channels.whatsapp import WhatsAppChannel, signature
from tests.channels.whatsapp.conftest import APP_SECRET, VERIFY_TOKEN, ChannelFactory, WebhookSink
from tests.fakes.whatsapp_cloud import FakeWhatsApp

CITIZEN = "6281234567890"
ADDRESS = "+" + CITIZEN


async def test_verification_echoes_the_challenge_only_for_the_verify_token(whatsapp: WhatsAppChannel) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    records, reply = await whatsapp.handle_webhook(WebhookRequest(headers={}, query=query, body=b""))
    assert (records, reply.status, reply.body) == ([], 200, "1158201444")
    with pytest.raises(WebhookRejected):
        await whatsapp.handle_webhook(
            WebhookRequest(headers={}, query={**query, "hub.verify_token": "tebakan"}, body=b"")
        )


async def test_forged_and_unsigned_posts_are_refused_before_parsing(whatsapp: WhatsAppChannel) -> None:
    body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    for headers in (
        {},
        {"X-Hub-Signature-256": signature("rahasia-lain", body)},
        {"X-Hub-Signature-256": signature(APP_SECRET, body + b" ")},
        {"x-hub-signature-256": signature(APP_SECRET, body).upper()},
    ):
        with pytest.raises(WebhookRejected):
            await whatsapp.handle_webhook(WebhookRequest(headers=headers, query={}, body=body))
    # Not JSON, but unsigned: refused as forged, never read.
    with pytest.raises(WebhookRejected):
        await whatsapp.handle_webhook(WebhookRequest(headers={}, query={}, body=b"{not json"))
    signed = {"x-hub-signature-256": signature(APP_SECRET, body)}
    records, reply = await whatsapp.handle_webhook(WebhookRequest(headers=signed, query={}, body=body))
    assert (records, reply.status) == ([], 200)


async def test_a_fake_signing_with_another_secret_gets_403_and_yields_nothing(
    fake_whatsapp: FakeWhatsApp, webhook_sink: WebhookSink, make_whatsapp: ChannelFactory
) -> None:
    webhook_sink.channel = await make_whatsapp(app_secret="rahasia-yang-lain")
    fake_whatsapp.webhook_attempts = 1
    fake_whatsapp.user_writes(CITIZEN, "JAM")
    await fake_whatsapp.webhooks_drained()
    assert (webhook_sink.records, webhook_sink.answers) == ([], [403])


async def test_statuses_become_receipts_for_the_delivery_in_any_order(
    fake_whatsapp: FakeWhatsApp, webhook_sink: WebhookSink, whatsapp: WhatsAppChannel
) -> None:
    webhook_sink.channel = whatsapp
    fake_whatsapp.shuffle_statuses = True
    items = [
        Outbound(
            700 + n, f"+62812345678{n:02d}", Content(text=f"Info {n}", subject="Jadwal"), kind="announcement"
        )
        for n in range(5)
    ]
    outcomes = [o async for _, o in whatsapp.send(items, NoPacing())]
    assert all(isinstance(o, Sent) for o in outcomes)
    await fake_whatsapp.webhooks_drained()
    got = sorted((r.delivery_id, r.receipt_status) for r in webhook_sink.records)
    assert got == sorted((700 + n, s) for n in range(5) for s in ("delivered", "read"))
    assert {r.kind for r in webhook_sink.records} == {"receipt"}
    assert set(webhook_sink.answers) == {200}


async def test_a_number_reported_undeliverable_later_is_gone_with_the_fallback(
    fake_whatsapp: FakeWhatsApp, webhook_sink: WebhookSink, whatsapp: WhatsAppChannel
) -> None:
    """Meta may accept a send and report 131026 afterwards: the same outcome as at the send."""
    webhook_sink.channel = whatsapp
    fake_whatsapp.async_codes = {131026, 131047}
    fake_whatsapp.add_non_user(CITIZEN)
    late_reader = "6281234567891"  # has not written in 24 h: the answer fails later with 131047
    items = [
        Outbound(41, ADDRESS, Content(text="Info", subject="Jadwal"), kind="announcement"),
        Outbound(42, "+" + late_reader, Content(text="Jawaban"), kind="reply"),
    ]
    outcomes = [o async for _, o in whatsapp.send(items, NoPacing())]
    assert [type(o) for o in outcomes] == [Sent, Sent]  # Meta took both, then said they failed
    await fake_whatsapp.webhooks_drained()
    assert sorted(webhook_sink.records, key=lambda r: r.delivery_id or 0) == [
        Inbound(
            channel="whatsapp",
            kind="receipt",
            delivery_id=41,
            receipt_status="gone",
            text="WhatsApp error 131026: Message Undeliverable",
            fallback="sms",
        ),
        Inbound(
            channel="whatsapp",
            kind="receipt",
            delivery_id=42,
            receipt_status="failed",
            text="WhatsApp error 131047: Re-engagement message",
        ),
    ]


async def test_citizens_messages_become_keyword_commands_text_and_buttons(
    fake_whatsapp: FakeWhatsApp, webhook_sink: WebhookSink, whatsapp: WhatsAppChannel
) -> None:
    webhook_sink.channel = whatsapp
    fake_whatsapp.user_writes(CITIZEN, "daftar ktp-el")
    fake_whatsapp.user_writes(CITIZEN, "Hours?")
    fake_whatsapp.user_writes(CITIZEN, "Selamat pagi, kapan KTP saya jadi?")
    fake_whatsapp.user_presses(CITIZEN, "s:12", "KTP-el")
    fake_whatsapp.user_picks(CITIZEN, "o:kota-serang", "Kota Serang")
    fake_whatsapp.user_taps_quick_reply(CITIZEN, "BERHENTI", "Berhenti")
    fake_whatsapp.user_taps_quick_reply(CITIZEN, "ra:K7Q2", "Sudah diteruskan")
    await fake_whatsapp.webhooks_drained()
    person = {"channel": "whatsapp", "address": ADDRESS, "sender": ADDRESS}
    expected = {
        Inbound(**person, kind="command", command="daftar", args=("ktp-el",), text="daftar ktp-el"),
        Inbound(**person, kind="command", command="jam", text="Hours?", locale="en"),
        Inbound(**person, kind="text", text="Selamat pagi, kapan KTP saya jadi?"),
        Inbound(**person, kind="button", data="s:12"),
        Inbound(**person, kind="button", data="o:kota-serang"),
        Inbound(**person, kind="command", command="berhenti", text="Berhenti"),
        Inbound(**person, kind="button", data="ra:K7Q2"),
    }
    # Webhooks of different messages travel concurrently, as Meta's do: compare as a set.
    assert (len(webhook_sink.records), set(webhook_sink.records)) == (len(expected), expected)


async def test_a_message_delivered_twice_is_answered_once(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    fake_whatsapp.user_writes(CITIZEN, "JAM")
    [message] = fake_whatsapp.inbound
    body = json.dumps(_envelope(fake_whatsapp, {"messages": [message]})).encode()
    request = WebhookRequest(
        headers={"X-Hub-Signature-256": signature(APP_SECRET, body)}, query={}, body=body
    )
    first, _ = await whatsapp.handle_webhook(request)
    again, reply = await whatsapp.handle_webhook(request)
    assert ([r.command for r in first], again, reply.status) == (["jam"], [], 200)


async def test_a_number_writing_too_often_is_not_answered(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory
) -> None:
    channel = await make_whatsapp(inbound_per_minute=3)
    answered = []
    for n in range(5):
        message = {
            "from": CITIZEN,
            "id": f"wamid.loop{n}",
            "timestamp": "1700000000",
            "type": "text",
            "text": {"body": "JAM"},
        }
        body = json.dumps(_envelope(fake_whatsapp, {"messages": [message]})).encode()
        headers = {"X-Hub-Signature-256": signature(APP_SECRET, body)}
        records, _ = await channel.handle_webhook(WebhookRequest(headers=headers, query={}, body=body))
        answered.append(len(records))
    assert answered == [1, 1, 1, 0, 0]


async def test_notifications_for_another_phone_number_are_ignored(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    message = {
        "from": CITIZEN,
        "id": "wamid.other",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "JAM"},
    }
    payload = _envelope(fake_whatsapp, {"messages": [message]})
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    body = json.dumps(payload).encode()
    headers = {"X-Hub-Signature-256": signature(APP_SECRET, body)}
    assert (await whatsapp.handle_webhook(WebhookRequest(headers=headers, query={}, body=body)))[0] == []


def _envelope(fake: FakeWhatsApp, value: dict[str, object]) -> dict[str, object]:
    """Meta's ``whatsapp_business_account`` notification around one ``messages`` change."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": fake.waba_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": fake.display_phone_number,
                                "phone_number_id": fake.phone_number_id,
                            },
                            "contacts": [{"profile": {"name": "Warga"}, "wa_id": CITIZEN}],
                            **value,
                        },
                    }
                ],
            }
        ],
    }


async def test_a_signed_notification_of_an_unexpected_shape_yields_nothing(whatsapp: WhatsAppChannel) -> None:
    """Meta's own payload is never malformed, but what its signature covers is read defensively."""
    for payload in (
        {"object": "whatsapp_business_account", "entry": ["x", {"changes": "y"}]},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": []}]}]},
        {"object": "page", "entry": []},
        [],
    ):
        body = json.dumps(payload).encode()
        headers = {"X-Hub-Signature-256": signature(APP_SECRET, body)}
        records, reply = await whatsapp.handle_webhook(WebhookRequest(headers=headers, query={}, body=body))
        assert (records, reply.status) == ([], 200)
