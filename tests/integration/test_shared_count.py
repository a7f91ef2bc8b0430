"""The count adapters share through Redis (``Channel.use_shared_limits``), events and distinct members.

Distinct members are what a provider's "unique recipients per moving 24 hours" counts: a recipient
already written to in the window costs nothing more, a new one fits while the window has room. Two
callers with their own Redis connections stand in for two worker processes.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from hub.ratelimit import shared_count

KEY = b"test-key"


@pytest.fixture
async def callers(redis_url):
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        yield shared_count(first, "t-count", KEY), shared_count(second, "t-count", KEY), first
    finally:
        await first.aclose()
        await second.aclose()


async def test_two_callers_together_admit_exactly_the_limit_of_distinct_members(callers):
    one, two, _ = callers
    members = [f"+62812000{i:03d}" for i in range(40)]
    # Both callers try every member at once: 80 attempts on 40 members, racing.
    tries = [count("tier", "number-1", 10, 60.0, member=m) for m in members for count in (one, two)]
    results = await asyncio.gather(*tries)
    admitted = {members[i // 2] for i, ok in enumerate(results) if ok}
    assert len(admitted) == 10
    # A member already in the window fits again, from either caller; a new one does not.
    for member in sorted(admitted):
        assert await two("tier", "number-1", 10, 60.0, member=member)
        assert await one("tier", "number-1", 10, 60.0, member=member)
    refused = sorted(set(members) - admitted)
    assert not await one("tier", "number-1", 10, 60.0, member=refused[0])
    assert 59.0 < await one.wait("tier", "number-1", 10, 60.0, member=refused[0]) <= 60.0
    assert await one.wait("tier", "number-1", 10, 60.0, member=sorted(admitted)[0]) == 0.0
    # Another key (another sending number) has a window of its own.
    assert await one("tier", "number-2", 10, 60.0, member=refused[0])


async def test_the_window_moves_on(callers):
    one, two, _ = callers
    assert await one("tier", "n", 2, 0.4, member="a")
    assert await two("tier", "n", 2, 0.4, member="b")
    assert not await one("tier", "n", 2, 0.4, member="c")
    wait = await two.wait("tier", "n", 2, 0.4, member="c")
    assert 0.0 < wait <= 0.4
    await asyncio.sleep(wait + 0.05)  # the window is Redis' clock: the time it named has passed
    assert await two("tier", "n", 2, 0.4, member="c")


async def test_events_are_counted_as_before(callers):
    """Without a member every call is one event (the SMS per-number inbound limit)."""
    one, two, _ = callers
    results = await asyncio.gather(
        *(count("mo", "+62811", 3, 60.0) for count in (one, two) for _ in range(4))
    )
    assert sorted(results) == [False] * 5 + [True] * 3
    assert await one.wait("mo", "+62811", 3, 60.0) > 0


async def test_redis_holds_no_number(callers):
    one, _, redis = callers
    await one("tier", "phone-id-1", 5, 60.0, member="+6281299990000")
    await one("mo", "+6281299990000", 5, 60.0)
    keys = [k.decode() async for k in redis.scan_iter("t-count:*")]
    assert len(keys) == 2
    dumped = " ".join(keys)
    for key in keys:
        dumped += " ".join(m.decode() for m in await redis.zrange(key, 0, -1))
    assert "6281299990000" not in dumped and "phone-id-1" not in dumped
