"""Fixtures for the SMS channel: a real Kannel (session) and a webhook receiver that feeds the channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from channels.base import Inbound, WebhookRejected, WebhookRequest
from channels.sms import SmsChannel
from tests.services.kannel import Kannel, free_port, require_kannel, start_kannel

DLR_SECRET = "test-dlr-secret"
MO_SECRET = "test-mo-secret"
SENDER = "DUKCAPIL"


@pytest.fixture(scope="session")
def webhook_port() -> int:
    """The port Kannel's sms-service get-url calls; tests start a ``WebhookReceiver`` on it."""
    return free_port()


@pytest.fixture(scope="session")
def kannel(tmp_path_factory: pytest.TempPathFactory, webhook_port: int) -> Iterator[Kannel]:
    require_kannel()
    mo_url = f"http://127.0.0.1:{webhook_port}/v1/channels/sms/webhook?kind=mo&k={MO_SECRET}&from=%p&text=%a"
    instance = start_kannel(tmp_path_factory.mktemp("kannel"), mo_url=mo_url)
    try:
        yield instance
    finally:
        instance.stop()


@dataclass
class WebhookReceiver:
    """A small aiohttp server standing in for the hub's webhook route: it calls ``handle_webhook``."""

    port: int
    channel: SmsChannel | None = None
    inbound: list[Inbound] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        assert self.channel is not None, "set receiver.channel first"
        query = dict(request.query)
        self.calls.append(query)
        hook = WebhookRequest(headers=dict(request.headers), query=query, body=await request.read())
        try:
            records, response = await self.channel.handle_webhook(hook)
        except WebhookRejected as exc:
            self.rejected += 1
            return web.Response(status=403, text=str(exc))
        self.inbound.extend(records)
        return web.Response(status=response.status, text=response.body, content_type=response.media_type)

    async def wait(self, predicate: Any, timeout: float = 10.0) -> list[Inbound]:
        deadline = time.monotonic() + timeout
        while not predicate(self.inbound):
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook records not as expected within {timeout}s: {self.inbound}")
            await asyncio.sleep(0.05)
        return list(self.inbound)


@pytest.fixture
async def receiver(webhook_port: int) -> AsyncIterator[WebhookReceiver]:
    state = WebhookReceiver(webhook_port)
    app = web.Application()
    app.router.add_route("*", "/v1/channels/sms/webhook", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", webhook_port, reuse_address=True)
    await site.start()
    try:
        yield state
    finally:
        await runner.cleanup()


def make_channel(gateways: list[dict[str, Any]], public_url: str, **settings: Any) -> SmsChannel:
    conf: dict[str, Any] = {
        "sender": SENDER,
        "dlr_secret": DLR_SECRET,
        "mo_secret": MO_SECRET,
        "gateways": gateways,
    }
    conf.update(settings)
    return SmsChannel.from_settings(conf, public_url=public_url)


@pytest.fixture
async def sms(kannel: Kannel, receiver: WebhookReceiver) -> AsyncIterator[SmsChannel]:
    """An ``SmsChannel`` sending through the session's Kannel, with webhooks landing in ``receiver``."""
    kannel.clear()
    channel = make_channel([kannel.gateway_settings()], receiver.url)
    receiver.channel = channel
    await channel.open()
    try:
        yield channel
    finally:
        await channel.close()
