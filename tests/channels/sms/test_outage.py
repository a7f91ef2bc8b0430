"""An SMS gateway that is down: one circuit for every worker, and no delivery pays for it (defect 16).

The gateway answers as Kannel does while its SMSC link is down (503 "temporal failure"). Two workers send;
once the first has seen ``failure_threshold`` failures, the circuit is open for both (shared in Redis),
so the second does not hammer the dead gateway, and every delivery is "retry later, the provider's
fault", which the hub retries without spending the delivery's attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from redis.asyncio import Redis

from channels.base import Content, Outbound, RetryLater
from channels.sms import SmsChannel
from hub.ratelimit import RedisPacer


class DownGateway:
    """Kannel's sendsms while no SMSC is connected; counts what it was asked."""

    def __init__(self) -> None:
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/cgi-bin/sendsms", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=503, text="3: Temporal failure, try again later.")


@pytest.fixture
async def gateway() -> AsyncIterator[DownGateway]:
    server = DownGateway()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def worker(url: str) -> SmsChannel:
    return SmsChannel.from_settings(
        {
            "dlr_secret": "rahasia",
            "concurrency": 1,
            "failure_threshold": 3,
            "cooloff_seconds": 60,
            "gateways": [
                {"driver": "kannel", "name": "kannel", "url": url, "username": "hub", "password": "x"}
            ],
        },
        public_url="http://hub.test",
    )


async def test_a_dead_gateway_is_asked_threshold_times_by_all_workers_together(
    gateway: DownGateway, redis_url: str
) -> None:
    prefix = f"sms-outage-{id(gateway)}"
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    workers = [worker(gateway.url) for _ in range(2)]
    outcomes = []
    try:
        for n, (channel, client) in enumerate(zip(workers, clients, strict=True)):
            items = [
                Outbound(n * 100 + i, f"08123456{n}{i:03d}", Content(text="Dokumen Anda siap diambil."))
                for i in range(10)
            ]
            pacer = RedisPacer(client, prefix)
            outcomes += [outcome async for _, outcome in channel.send(items, pacer)]
    finally:
        for channel in workers:
            await channel.close()
        for client in clients:
            await client.aclose()

    assert gateway.requests == 3  # the second worker never called the dead gateway
    assert len(outcomes) == 20
    assert all(isinstance(o, RetryLater) and o.provider for o in outcomes), outcomes
    cooling = [o for o in outcomes if "cooling off" in o.reason]  # type: ignore[union-attr]
    assert len(cooling) == 17 and all(o.delay and 55 < o.delay <= 60 for o in cooling)  # type: ignore[union-attr]
