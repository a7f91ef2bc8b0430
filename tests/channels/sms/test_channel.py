"""The SMS channel without Kannel: settings, outcomes, webhooks, gateway drivers against mock transports."""

from __future__ import annotations

import json

import httpx
import pytest

from channels.base import (
    Content,
    NoPacing,
    Outbound,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    WebhookRejected,
    WebhookRequest,
    load_channel_class,
)
from channels.sms import SmsChannel, parse_mo
from channels.sms.drivers import HttpJsonGateway, KannelGateway, dotted_get

from .conftest import DLR_SECRET, MO_SECRET, make_channel

KANNEL = {"driver": "kannel", "url": "http://kannel.invalid:13013", "username": "u", "password": "p"}


def channel(**settings: object) -> SmsChannel:
    return make_channel([dict(KANNEL)], "https://hub.example/", **settings)


def hook(**query: str) -> WebhookRequest:
    return WebhookRequest(headers={}, query=query, body=b"")


def test_registry_finds_the_channel() -> None:
    assert load_channel_class("sms") is SmsChannel
    assert SmsChannel.name == "sms"


def test_settings_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"^channels\.sms\.dlr_secret: required, not set$"):
        SmsChannel.from_settings({"gateways": [KANNEL]}, public_url="https://x")
    with pytest.raises(ValueError, match=r"^channels\.sms\.gateways: required, not set$"):
        SmsChannel.from_settings({"dlr_secret": "s"}, public_url="https://x")
    wrong_driver = r"channels\.sms\.gateways\.0\.driver: expected one of 'kannel', 'http', got 'smpp'"
    with pytest.raises(ValueError, match=wrong_driver):
        make_channel([{"driver": "smpp"}], "https://x")
    with pytest.raises(ValueError, match=r"channels\.sms\.gateways\.0\.pasword: unknown setting"):
        make_channel([{**KANNEL, "pasword": "x"}], "https://x")


def test_describe() -> None:
    assert channel().describe(Content(text="a" * 161)) == {
        "encoding": "GSM-7",
        "segments": 2,
        "max_segments": 6,
        "characters": 161,
    }
    assert channel().describe(Content(text="“Halo”")) == {
        "encoding": "UCS-2",
        "segments": 1,
        "max_segments": 6,
        "characters": 6,
    }
    assert channel(transliterate=True).describe(Content(text="“Halo”"))["encoding"] == "GSM-7"


def test_dlr_url_carries_a_token() -> None:
    sms = channel()
    url = sms.dlr_url(42)
    assert url.startswith("https://hub.example/v1/channels/sms/webhook?kind=dlr&d=42&t=")
    assert url.endswith("&s=%d")
    assert sms.dlr_token(42) != sms.dlr_token(43)
    assert make_channel([KANNEL], "https://h", dlr_secret="other").dlr_token(42) != sms.dlr_token(42)


@pytest.mark.parametrize(("dlr_type", "status"), [("1", "delivered"), ("2", "failed"), ("16", "failed")])
async def test_dlr_final_states(dlr_type: str, status: str) -> None:
    sms = channel()
    records, response = await sms.handle_webhook(hook(kind="dlr", d="42", t=sms.dlr_token(42), s=dlr_type))
    assert response.status == 200
    assert [(r.kind, r.delivery_id, r.receipt_status) for r in records] == [("receipt", 42, status)]


@pytest.mark.parametrize("dlr_type", ["4", "8", "%d", ""])
async def test_dlr_intermediate_states_give_no_record(dlr_type: str) -> None:
    sms = channel()
    records, _ = await sms.handle_webhook(hook(kind="dlr", d="42", t=sms.dlr_token(42), s=dlr_type))
    assert records == []


async def test_dlr_forged_token_is_rejected() -> None:
    sms = channel()
    with pytest.raises(WebhookRejected):
        await sms.handle_webhook(hook(kind="dlr", d="43", t=sms.dlr_token(42), s="1"))
    with pytest.raises(WebhookRejected):
        await sms.handle_webhook(hook(kind="dlr", d="abc", t="x", s="1"))


async def test_mo_needs_the_shared_secret() -> None:
    with pytest.raises(WebhookRejected):
        await channel().handle_webhook(hook(kind="mo", k="wrong", **{"from": "081234567890"}, text="JAM"))
    with pytest.raises(WebhookRejected, match="not configured"):
        await channel(mo_secret="").handle_webhook(
            hook(kind="mo", k="", **{"from": "081234567890"}, text="JAM")
        )
    assert MO_SECRET and DLR_SECRET


async def test_mo_parses_keywords() -> None:
    records, response = await channel().handle_webhook(
        hook(kind="mo", k=MO_SECRET, **{"from": "0812-3456-7890"}, text="daftar KTP Kecamatan")
    )
    assert response.status == 200 and response.body == ""
    (record,) = records
    assert (record.kind, record.command, record.args, record.locale) == (
        "command",
        "daftar",
        ("KTP", "Kecamatan"),
        "id",
    )
    assert record.address == record.sender == "+6281234567890"


@pytest.mark.parametrize(
    ("text", "command", "args", "locale"),
    [
        ("BERHENTI", "berhenti", (), "id"),
        ("stop", "berhenti", (), "id"),
        ("Jam", "jam", (), "id"),
        ("LAYANAN akta", "layanan", ("akta",), "id"),
        ("LACAK 3201-2024-000123", "lacak", ("3201-2024-000123",), "id"),
        ("INFO", "info", (), "id"),
        ("SUBSCRIBE KTP", "daftar", ("KTP",), "en"),
        ("unsubscribe", "berhenti", (), "en"),
        ("HOURS", "jam", (), "en"),
        ("Services", "layanan", (), "en"),
        ("TRACK 123", "lacak", ("123",), "en"),
        ("help", "info", (), "en"),
        ("JAM?", "jam", (), "id"),
    ],
)
def test_keywords(text: str, command: str, args: tuple[str, ...], locale: str) -> None:
    record = parse_mo("+6281234567890", text)
    assert (record.kind, record.command, record.args, record.locale) == ("command", command, args, locale)


def test_other_text_is_text() -> None:
    record = parse_mo("+6281234567890", "  Terima kasih banyak  ")
    assert (record.kind, record.text, record.command) == ("text", "Terima kasih banyak", "")


async def test_mo_from_a_non_mobile_sender_is_ignored() -> None:
    records, response = await channel().handle_webhook(
        hook(kind="mo", k=MO_SECRET, **{"from": "TELKOMSEL"}, text="x")
    )
    assert records == [] and response.status == 200


async def test_send_outcomes_without_network() -> None:
    sms = channel(max_segments=1)
    items = [
        Outbound(1, "021-5000-1234", Content(text="hi")),
        Outbound(2, "081234567890", Content(text="a" * 161)),
        Outbound(3, "081234567890", Content(text="   ")),
    ]
    results = dict([r async for r in sms.send(items, NoPacing())])
    assert isinstance(results[1], RecipientGone) and "landline" in results[1].reason
    assert isinstance(results[2], Rejected) and "2 SMS segments" in results[2].reason
    assert isinstance(results[3], Rejected)


# ------------------------------------------------------------------------------------------------------
# Drivers against mock transports


def kannel_gateway(handler: object) -> KannelGateway:
    gateway = KannelGateway(
        "k", url="http://kannel.test:13013", username="hub", password="pw", sender="DUKCAPIL"
    )
    gateway._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return gateway


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (202, "0: Accepted for delivery", Sent),
        (202, "3: Queued for later delivery", Sent),
        (503, "Temporal failure, try again later.", RetryLater),
        (403, "Not routable. Do not try again.", Rejected),
        (403, "Authorization failed for sendsms", Rejected),
        (400, "Missing receiver number", Rejected),
        (500, "oops", RetryLater),
    ],
)
async def test_kannel_driver_mapping(status: int, body: str, outcome: type) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=body)

    gateway = kannel_gateway(handler)
    result = await gateway.send(
        "+6281234567890", "€ ok", coding="UCS-2", delivery_id=7, dlr_url="https://h/x?d=7&s=%d"
    )
    await gateway.close()
    assert isinstance(result, outcome)
    params = seen[0].url.params
    assert seen[0].url.path == "/cgi-bin/sendsms"
    assert params["to"] == "+6281234567890" and params["text"] == "€ ok" and params["from"] == "DUKCAPIL"
    assert (params["coding"], params["charset"], params["dlr-mask"]) == ("2", "UTF-8", "31")
    assert params["dlr-url"] == "https://h/x?d=7&s=%d"


async def test_kannel_driver_connection_refused_is_retry_later() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = await kannel_gateway(handler).send("+62", "x", coding="GSM-7", delivery_id=1, dlr_url="")
    assert type(result) is RetryLater


def test_dotted_get() -> None:
    data = {"data": {"messages": [{"id": 9}]}}
    assert dotted_get(data, "data.messages.0.id") == 9
    assert dotted_get(data, "data.missing.id") is None
    assert dotted_get(data, "data.messages.3.id") is None


async def test_http_driver_template_and_statuses() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"result": {"msgid": "abc-1"}}),
            httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"),
            httpx.Response(422, text="bad number"),
            httpx.Response(502, text="bad gateway"),
        ]
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    gateway = HttpJsonGateway(
        "agg",
        url="https://sms.example/api/send",
        headers={"Authorization": "Bearer t0ken"},
        body='{"to": "{to}", "message": "{text}", "sender": "{from}", "callback": "{dlr_url}", "n": 1}',
        id_path="result.msgid",
        sender="DUKCAPIL",
    )
    gateway._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    text = 'Kantor "buka"\n{from} literal'
    first = await gateway.send("+6281234567890", text, coding="GSM-7", delivery_id=5, dlr_url="https://h/d")
    assert first == Sent("abc-1")
    assert seen[0].headers["authorization"] == "Bearer t0ken"
    assert json.loads(seen[0].content) == {
        "to": "+6281234567890",
        "message": 'Kantor "buka"\n{from} literal',
        "sender": "DUKCAPIL",
        "callback": "https://h/d",
        "n": 1,
    }
    assert await gateway.send("+62", "x", coding="GSM-7", delivery_id=6, dlr_url="") == RetryLater(
        "agg: HTTP 429: slow down", 7.0, provider=True
    )
    assert isinstance(await gateway.send("+62", "x", coding="GSM-7", delivery_id=7, dlr_url=""), Rejected)
    assert isinstance(await gateway.send("+62", "x", coding="GSM-7", delivery_id=8, dlr_url=""), RetryLater)
    await gateway.close()
