"""Fixtures for the WhatsApp adapter tests: the loopback Cloud API per test, adapters pointed at it, and
a webhook endpoint that hands the fake's signed POSTs to the adapter as the hub's route would."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from channels.base import Inbound, WebhookRejected, WebhookRequest
from channels.whatsapp import WhatsAppChannel
from tests.fakes.whatsapp_cloud import FakeWhatsApp

APP_SECRET = "rahasia-aplikasi-meta"
VERIFY_TOKEN = "token-verifikasi-webhook"
TEMPLATES = {
    "announcement": {"name": "pengumuman_dukcapil", "parameters": ["subject", "text"]},
    "correction": {"name": "ralat_dukcapil", "parameters": ["subject", "text"]},
    "applicant": {"name": "status_permohonan", "parameters": ["text"]},
    "reply": {"name": "balasan_dukcapil", "parameters": ["text"]},
}


@pytest.fixture
def fake_whatsapp() -> Iterator[FakeWhatsApp]:
    server = FakeWhatsApp(app_secret=APP_SECRET).start()
    server.add_template("pengumuman_dukcapil", "id", "Pengumuman: {{1}}\n\n{{2}}")
    server.add_template("pengumuman_dukcapil", "en", "Announcement: {{1}}\n\n{{2}}")
    server.add_template("ralat_dukcapil", "id", "Ralat: {{1}}\n\n{{2}}")
    server.add_template("status_permohonan", "id", "Permohonan Anda: {{1}}")
    server.add_template("balasan_dukcapil", "id", "Balasan Disdukcapil: {{1}}")
    try:
        yield server
    finally:
        server.stop()


ChannelFactory = Callable[..., Awaitable[WhatsAppChannel]]


def settings_for(fake: FakeWhatsApp, **overrides: object) -> dict[str, object]:
    """A ``[channels.whatsapp]`` table for the fake, as an operator would write it."""
    return {
        "enabled": True,
        "token": fake.token,
        "phone_number_id": fake.phone_number_id,
        "api_version": fake.api_version,
        "base_url": fake.base_url,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "templates": TEMPLATES,
        "fallback_channel": "sms",
        **overrides,
    }


@pytest.fixture
async def make_whatsapp(fake_whatsapp: FakeWhatsApp) -> AsyncIterator[ChannelFactory]:
    """Opened adapters pointed at the fake; keyword arguments override settings keys."""
    opened: list[WhatsAppChannel] = []

    async def make(**overrides: object) -> WhatsAppChannel:
        channel = WhatsAppChannel.from_settings(settings_for(fake_whatsapp, **overrides), public_url="")
        opened.append(channel)
        await channel.open()
        return channel

    try:
        yield make
    finally:
        for channel in opened:
            await channel.close()


@pytest.fixture
async def whatsapp(make_whatsapp: ChannelFactory) -> WhatsAppChannel:
    return await make_whatsapp()


@dataclass
class WebhookSink:
    """The hub's webhook route in small: every call goes to ``channel.handle_webhook``."""

    channel: WhatsAppChannel | None = None
    records: list[Inbound] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        assert self.channel is not None, "set sink.channel first"
        incoming = WebhookRequest(
            headers=dict(request.headers), query=dict(request.query), body=await request.read()
        )
        try:
            records, reply = await self.channel.handle_webhook(incoming)
        except WebhookRejected as exc:
            self.answers.append(403)
            return web.Response(status=403, text=str(exc))
        self.records += records
        self.answers.append(reply.status)
        return web.Response(status=reply.status, text=reply.body)


@pytest.fixture
async def webhook_sink(fake_whatsapp: FakeWhatsApp) -> AsyncIterator[WebhookSink]:
    """A loopback endpoint on a free port; the fake POSTs its webhooks there."""
    sink = WebhookSink()
    app = web.Application()
    app.router.add_route("*", "/v1/channels/whatsapp/webhook", sink.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    sink.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/channels/whatsapp/webhook"
    fake_whatsapp.webhook_url = sink.url
    try:
        yield sink
    finally:
        fake_whatsapp.webhook_url = None
        await runner.cleanup()
