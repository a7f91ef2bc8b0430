"""Weighted failover and circuit breakers: a failing HTTP gateway in front of a real Kannel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from channels.base import Content, NoPacing, Outbound, RetryLater, Sent
from channels.sms.drivers import CircuitBreaker, Failover, KannelGateway
from tests.services.kannel import Kannel, free_port

from .conftest import WebhookReceiver, make_channel


@dataclass
class FakeGateway:
    """An aggregator API that answers 503 until told otherwise."""

    port: int
    status: int = 503
    hits: list[dict] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/send"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(await request.json())
        if self.status == 200:
            return web.json_response({"data": {"id": f"agg-{len(self.hits)}"}})
        return web.Response(status=self.status, text="service unavailable")


@pytest.fixture
async def fake_gateway() -> AsyncIterator[FakeGateway]:
    state = FakeGateway(free_port())
    app = web.Application()
    app.router.add_post("/api/send", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", state.port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


def http_gateway(fake: FakeGateway, **extra: object) -> dict[str, object]:
    conf: dict[str, object] = {
        "driver": "http",
        "name": "aggregator",
        "url": fake.url,
        "headers": {"Authorization": "Bearer test"},
        "body": {"to": "{to}", "text": "{text}", "from": "{from}", "callback": "{dlr_url}"},
        "id_path": "data.id",
        "timeout": 2.0,
    }
    conf.update(extra)
    return conf


async def test_failing_gateway_fails_over_then_cools_off_then_comes_back(
    kannel: Kannel, receiver: WebhookReceiver, fake_gateway: FakeGateway
) -> None:
    kannel.clear()
    # Kannel has weight 0: a standby used only when the aggregator is out, so the test is deterministic.
    channel = make_channel(
        [http_gateway(fake_gateway, weight=1), kannel.gateway_settings(weight=0)],
        receiver.url,
        failure_threshold=2,
        cooloff_seconds=30,
        concurrency=1,
    )
    clock = Clock()
    channel.failover.breakers["aggregator"].clock = clock
    items = [Outbound(500 + i, f"0812345678{60 + i}", Content(text=f"Pesan {i}")) for i in range(6)]
    results = [r async for r in channel.send(items, NoPacing())]

    assert sorted(d for d, _ in results) == [500 + i for i in range(6)]
    assert all(isinstance(o, Sent) for _, o in results), results
    # Two 503s open the breaker; the other four go straight to Kannel.
    assert len(fake_gateway.hits) == 2
    assert channel.failover.breakers["aggregator"].state == "open"
    got = await kannel.wait_messages(6)
    await asyncio.sleep(0.2)
    assert sorted(m.receiver for m in kannel.received()) == sorted(f"+62812345678{60 + i}" for i in range(6))
    assert {m.text() for m in got} == {f"Pesan {i}" for i in range(6)}

    # After the cool-off one probe goes to the aggregator; it succeeds and the breaker closes.
    fake_gateway.status = 200
    clock.now += 30
    assert channel.failover.breakers["aggregator"].state == "half-open"
    kannel.clear()
    results = [
        r async for r in channel.send([Outbound(600, "081234567870", Content(text="Lagi"))], NoPacing())
    ]
    assert results == [(600, Sent("agg-3"))]
    assert fake_gateway.hits[-1]["to"] == "+6281234567870"
    assert fake_gateway.hits[-1]["callback"].startswith(
        f"{receiver.url}/v1/channels/sms/webhook?kind=dlr&d=600&t="
    )
    assert channel.failover.breakers["aggregator"].state == "closed"
    await asyncio.sleep(0.2)
    assert kannel.received() == []
    await channel.close()


async def test_every_gateway_down_is_retry_later(
    receiver: WebhookReceiver, fake_gateway: FakeGateway
) -> None:
    channel = make_channel(
        [
            http_gateway(fake_gateway),
            {
                "driver": "kannel",
                "name": "dead",
                "url": f"http://127.0.0.1:{free_port()}",
                "username": "u",
                "password": "p",
            },
        ],
        receiver.url,
        failure_threshold=1,
        cooloff_seconds=60,
    )
    first = [o async for _, o in channel.send([Outbound(700, "081234567880", Content(text="x"))], NoPacing())]
    assert isinstance(first[0], RetryLater) and "no SMS gateway took the message" in first[0].reason
    # Both breakers are open now: no network call at all, and the hub learns when to come back.
    hits = len(fake_gateway.hits)
    second = [
        o async for _, o in channel.send([Outbound(701, "081234567881", Content(text="x"))], NoPacing())
    ]
    assert isinstance(second[0], RetryLater) and "cooling off" in second[0].reason
    assert second[0].delay is not None and 0 < second[0].delay <= 60
    assert len(fake_gateway.hits) == hits
    await channel.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_states_and_single_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooloff=10, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.acquire()
    breaker.record_success()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.acquire()
    assert breaker.retry_in() == 10
    clock.now += 10
    assert breaker.state == "half-open"
    assert breaker.acquire()  # the probe
    assert not breaker.acquire()  # only one
    breaker.record_failure()  # probe failed: open again for a full cool-off
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.acquire() and breaker.acquire()


def test_lost_probe_does_not_block_for_ever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooloff=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    clock.now += 4
    assert not breaker.acquire()
    clock.now += 1
    assert breaker.acquire()


def test_weights_spread_sends() -> None:
    import random

    gateways = [
        KannelGateway("a", url="http://a", username="u", password="p", weight=3),
        KannelGateway("b", url="http://b", username="u", password="p", weight=1),
        KannelGateway("standby", url="http://c", username="u", password="p", weight=0),
    ]
    failover = Failover(gateways, rng=random.Random(7))
    firsts = [next(failover.attempts()).name for _ in range(4000)]
    assert 0.70 < firsts.count("a") / len(firsts) < 0.80
    assert "standby" not in firsts
    assert [g.name for g in failover.attempts()][-1] == "standby"  # tried last
