"""Two workers pacing one bot through Redis draw no 429, however late their requests reach Telegram.

The fake counts a request when it arrives and refuses the 31st in any second (and a second message to a
chat within a second). Here each request reaches it after a random 0-100 ms, as on a loaded machine or a
distant network: spacing sends evenly at the client is then not enough (defect 10: 3-7 × 429 per 2,000
messages from two worker processes). Deployed settings: 2 % and 10 % safety margins.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from redis.asyncio import Redis

from channels.base import Content, Outbound, RetryLater, Sent
from hub.ratelimit import RedisPacer
from tests.channels.telegram.conftest import ChannelFactory
from tests.fakes.telegram_api import FakeTelegram

CHATS = [7_100_000 + n for n in range(90)]


def busiest(times: list[float], period: float = 1.0) -> int:
    """The most events inside any window of ``period`` seconds, counted as the fake counts them."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - period:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_two_workers_draw_no_429_when_requests_arrive_late(
    fake_telegram: FakeTelegram, make_telegram: ChannelFactory, redis_url: str
) -> None:
    for chat in CHATS:
        fake_telegram.add_private(chat)
    fake_telegram.arrival_delay = (0.0, 0.1)
    workers = [await make_telegram(safety_margin=0.02, chat_safety_margin=0.1) for _ in range(2)]
    clients = [Redis.from_url(redis_url) for _ in workers]
    prefix = f"pacing-{id(workers)}"

    async def broadcast(worker: int) -> list[object]:
        """Each worker sends one message to every chat (every chat gets two, one from each worker)."""
        pacer = RedisPacer(clients[worker], prefix)
        items = [
            Outbound(worker * 1000 + n, str(chat), Content(text=f"Info {worker} untuk {chat}"))
            for n, chat in enumerate(CHATS)
        ]
        return [outcome async for _, outcome in workers[worker].send(items, pacer)]

    try:
        outcomes = await asyncio.gather(broadcast(0), broadcast(1))
    finally:
        for client in clients:
            await client.aclose()

    assert fake_telegram.too_many_requests == 0, fake_telegram.errors_for("sendMessage")
    assert [type(o) for both in outcomes for o in both] == [Sent] * (2 * len(CHATS))
    sent = fake_telegram.messages()
    assert busiest([m.at for m in sent]) <= 30
    per_chat: dict[int | str, list[float]] = defaultdict(list)
    for m in sent:
        per_chat[m.chat_id].append(m.at)
    assert {busiest(times) for times in per_chat.values()} == {1}
    assert {len(times) for times in per_chat.values()} == {2}


async def test_a_429_in_one_worker_pauses_the_whole_bot_in_every_worker(
    fake_telegram: FakeTelegram, make_telegram: ChannelFactory, redis_url: str
) -> None:
    """Flood control answered one worker: the other stops sending to every chat until it is over, and
    says "retry later, the provider's fault" (no attempt spent) instead of drawing 429 after 429."""
    for chat in CHATS[:5]:
        fake_telegram.add_private(chat)
    fake_telegram.force_flood(30, chat_id=CHATS[0])
    first, second = await make_telegram(), await make_telegram()
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    prefix = f"flood-{id(clients)}"
    try:
        drew = [
            o
            async for _, o in first.send(
                [Outbound(1, str(CHATS[0]), Content("a"))], RedisPacer(clients[0], prefix)
            )
        ]
        items = [Outbound(10 + n, str(chat), Content("b")) for n, chat in enumerate(CHATS[1:5])]
        held = [o async for _, o in second.send(items, RedisPacer(clients[1], prefix))]
    finally:
        for client in clients:
            await client.aclose()
    assert drew == [RetryLater("flood control: retry after 30s", delay=30.0, provider=True)]
    assert fake_telegram.messages() == [] and fake_telegram.too_many_requests == 1
    assert all(isinstance(o, RetryLater) and o.provider and 28 < (o.delay or 0) <= 30 for o in held), held
