"""Provider limits shared by every worker on every machine, kept in Redis (DESIGN.md rule 5).

Two mechanisms, both on Redis' own clock so workers with skewed clocks agree:

* A GCRA per rate key spaces sends evenly (``wait``). It decides when a send may *start*; the provider
  counts a request when it *arrives*. Between the two lie the worker's event loop, the HTTP client and the
  network, and on a loaded machine that gap varies by tens of milliseconds. Spacing alone therefore cannot
  keep "at most N per second" at the provider: with sends 34 ms apart, two that start 990 ms apart can
  arrive 1,001 ms apart while the 31st of a burst arrives 20 ms early (two worker processes drew 3-7 × 429
  per 2,000 messages against a strict server). The catch-up ``slack`` of fast keys shrank that tolerance
  further.
* Slots (``acquire`` / ``release``) make the limit hold whatever the jitter. A rate of N per period has N
  slots; a send takes one slot of each of its keys when it is admitted and gives it back when the
  provider has answered, and the slot is free again one period after that answer. A request is counted by
  the provider between its admission and its answer, so two requests on one slot are counted at least one
  period apart, and no window of one period at the provider can hold N + 1 of them (pigeonhole). A worker
  that dies mid-send leaves its slot taken for ``lease`` seconds, then it frees itself.

The urgent lane never queues behind bulk: while urgent sends are waiting on a key, bulk sends on that key
slow to ``bulk_share`` of the rate and leave the rest free. ``pause`` holds every send on a key (a
provider said "retry after", a gateway's circuit opened); ``paused_for`` tells how long is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from channels.base import Lane, Paused, Rate
from hub import metrics

_ACQUIRE = """
-- KEYS: the rate keys. ARGV: lane, bulk share, token ('' = space only, no slot), lease ms, longest
-- pause to wait out in ms (-1: any), then for each key: interval ms, slots, period ms. Returns 0 when
-- admitted, the ms to wait, or minus the ms a pause longer than that still holds.
-- Waits are whole milliseconds, rounded up: Redis truncates a fraction to 0, which would let a send
-- through unrecorded.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lane = ARGV[1]
local share = tonumber(ARGV[2])
local token = ARGV[3]
local lease = tonumber(ARGV[4])
local max_pause = tonumber(ARGV[5])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local base = 5 + (i - 1) * 3
  local interval = tonumber(ARGV[base + 1])
  local slots = tonumber(ARGV[base + 2])
  local period = tonumber(ARGV[base + 3])
  if lane == 'urgent' then
    redis.call('SET', key .. ':urgent', '1', 'PX', 2000)
  elseif redis.call('EXISTS', key .. ':urgent') == 1 then
    interval = interval / share
  end
  local paused = redis.call('PTTL', key .. ':pause')
  if paused > 0 and max_pause >= 0 and paused > max_pause then return -paused end
  if paused > 0 then wait = math.max(wait, paused) end
  local tat = tonumber(redis.call('GET', key) or '0')
  -- At high rates a waiter wakes a few ms late; up to `slack` of that is won back by the next send, so
  -- the long-run rate is the declared one. The slots below keep the hard limit regardless.
  local slack = 0
  if interval < 100 then slack = math.min(interval / 2, 10) end
  if tat < now - slack then tat = now - slack end
  if tat > now then wait = math.max(wait, tat - now) end
  tats[i] = tat + interval
  if token ~= '' then
    local held = key .. ':slots'
    redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
    if redis.call('ZCARD', held) >= slots then
      local first = tonumber(redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')[2])
      if first - now > period then
        -- Every slot is in flight: it frees when a send is answered; look again shortly.
        wait = math.max(wait, 5)
      else
        wait = math.max(wait, first - now)
      end
    end
  end
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tostring(tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
  if token ~= '' then
    local held = key .. ':slots'
    local period = tonumber(ARGV[5 + (i - 1) * 3 + 3])
    redis.call('ZADD', held, now + lease, token)
    redis.call('PEXPIRE', held, math.ceil(lease + period) + 1000)
  end
end
return 0
"""

_RELEASE = """
-- KEYS: the slot sets of a permit. ARGV: token, then each key's period ms. The slot frees one period
-- after now (the provider has answered by now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i, held in ipairs(KEYS) do
  local period = tonumber(ARGV[1 + i])
  if redis.call('ZSCORE', held, ARGV[1]) then
    redis.call('ZADD', held, 'XX', now + period, ARGV[1])
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Permit:
    """Slots held by one send, given back by ``RedisPacer.release``."""

    token: str
    keys: tuple[str, ...]
    periods: tuple[str, ...]


class RedisPacer:
    """The hub's ``channels.base.Pacer``: adapters name their rates, this makes all workers obey them."""

    def __init__(
        self, redis: Redis, prefix: str = "hub", bulk_share: float = 0.8, lease: float = 30.0
    ) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:rate:"
        self.bulk_share = bulk_share
        self.lease_ms = int(lease * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        """Return when one more send is allowed under every rate (spacing only, no slot held)."""
        await self._admit(rates, lane, "", None)

    async def acquire(
        self, rates: Sequence[Rate], lane: Lane = "bulk", *, max_pause: float | None = None
    ) -> Permit | None:
        """Like ``wait``, and hold a slot of each rate until ``release`` (see the module docstring).

        Raises ``Paused`` rather than wait out a pause longer than ``max_pause`` seconds.
        """
        if not rates:
            return None
        token = os.urandom(8).hex()
        await self._admit(rates, lane, token, max_pause)
        return Permit(
            token,
            tuple(self.prefix + r.key + ":slots" for r in rates),
            tuple(f"{1000.0 * r.period:.3f}" for r in rates),
        )

    async def release(self, permit: Permit | None) -> None:
        """The provider has answered the send ``permit`` was taken for."""
        if permit is not None:
            await self._release(keys=list(permit.keys), args=[permit.token, *permit.periods])

    async def _admit(self, rates: Sequence[Rate], lane: Lane, token: str, max_pause: float | None) -> None:
        if not rates:
            return
        keys = [self.prefix + r.key for r in rates]
        longest = -1 if max_pause is None else int(max_pause * 1000)
        args: list[str | float] = [lane, self.bulk_share, token, self.lease_ms, longest]
        for r in rates:
            args += [f"{1000.0 * r.period / r.count:.3f}", max(1, int(r.count)), f"{1000.0 * r.period:.3f}"]
        while True:
            wait_ms = int(await self._acquire(keys=keys, args=args))
            if wait_ms < 0:
                raise Paused(-wait_ms / 1000.0)
            if wait_ms == 0:
                return
            # A little jitter keeps workers that woke together from colliding again.
            pause = wait_ms / 1000.0 + random.uniform(0, 0.002)
            metrics.pacer_waited(lane, rates[0].key, pause)
            await asyncio.sleep(pause)

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every send on ``key`` for ``seconds``; a shorter pause never cuts a longer one short."""
        if seconds <= 0:
            return
        name, ms = self.prefix + key + ":pause", max(1, int(seconds * 1000))
        left = await self.redis.pttl(name)
        if left is None or left < ms:
            await self.redis.set(name, "1", px=ms)

    async def paused_for(self, key: str) -> float:
        """Seconds the pause on ``key`` still holds (0 when there is none)."""
        left = await self.redis.pttl(self.prefix + key + ":pause")
        return max(0.0, (left or 0) / 1000.0)


# --------------------------------------------------------------------------------------------------------
# Limits on clients (abuse of public forms, API-key guessing): N events per sliding window

_WINDOW = """
-- KEYS[1]: the sorted set of one client's events. ARGV: limit, window ms, 'take' | 'peek', member.
-- Returns 0 when one more event is allowed (and, for 'take', recorded), else the ms until one is.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  return math.max(1, math.ceil(oldest + window - now))
end
if ARGV[3] == 'take' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
"""


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds for each client, counted in Redis by one script.

    Every process shares the counts, and the check and the count are one atomic step, so concurrent
    requests cannot slip past the limit together. The window slides (no burst of twice the limit at
    a boundary) and runs on Redis' clock. ``who`` should not be personal data in clear (pass a keyed
    hash of an address, not the address).
    """

    def __init__(self, redis: Redis, prefix: str, name: str, limit: int, window: float) -> None:
        self.prefix = f"{prefix}:limit:{name}:"
        self.limit = limit
        self.window_ms = max(1, int(window * 1000))
        self.redis = redis

    async def take(self, who: str) -> float:
        """Count one event for ``who`` if the limit allows: 0.0, else the seconds until it would."""
        return await self._run(who, "take")

    async def wait_for(self, who: str) -> float:
        """Seconds until ``who`` may have one more event (0.0: now); counts nothing."""
        return await self._run(who, "peek")

    async def _run(self, who: str, mode: str) -> float:
        # EVAL rather than a registered script: one call, and a Redis that is down fails it at once.
        member = os.urandom(8).hex()
        wait_ms = int(
            await self.redis.eval(_WINDOW, 1, self.prefix + who, self.limit, self.window_ms, mode, member)
        )
        return wait_ms / 1000.0


_TAKE_ALL = """
-- KEYS: sorted sets of sliding windows. ARGV: member, then for each key its limit and window ms.
-- One slot in every window, or none: returns 0 when taken, else the ms until every window has room.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    wait = math.max(wait, math.max(1, math.ceil(oldest + window - now)))
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""


async def take_all(redis: Redis, slots: Sequence[tuple[SlidingWindow, str]], member: str) -> float:
    """One event counted in each ``(window, who)`` if every one of them has room, else in none.

    0.0 when taken, else the seconds until all would allow it. One script, so of N callers racing
    over any number of processes exactly as many get through as the tightest window allows, and a
    caller refused by one window spends nothing of the others. ``member`` names the event for
    ``give_back``.
    """
    keys = [window.prefix + who for window, who in slots]
    args: list[str | int] = [member]
    for window, _ in slots:
        args += [window.limit, window.window_ms]
    wait_ms = int(await redis.eval(_TAKE_ALL, len(keys), *keys, *args))
    return wait_ms / 1000.0


async def give_back(redis: Redis, slots: Sequence[tuple[SlidingWindow, str]], member: str) -> None:
    """Undo ``take_all`` for ``member``: the event turned out not to count (a right PIN)."""
    async with redis.pipeline(transaction=True) as pipe:
        for window, who in slots:
            pipe.zrem(window.prefix + who, member)
        await pipe.execute()


_DISTINCT = """
-- KEYS[1]: the sorted set of the members seen in the window (score: when last seen). ARGV: limit,
-- window ms, 'take' | 'peek', member. A member already in the window fits (and 'take' refreshes its
-- time); a new one fits while fewer than limit are in it. Returns 0 when it fits (and, for 'take', is
-- recorded), else the ms until the oldest member leaves the window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) and redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  return math.max(1, math.ceil(oldest + window - now))
end
if ARGV[3] == 'take' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return 0
"""


class SharedCount:
    """What adapters count their own limits with (``Channel.use_shared_limits``), shared by every process.

    ``await count(name, who, limit, window)`` records one event of ``who`` in a sliding window and says
    whether it fits (the SMS per-number inbound limit). With ``member=``, the window holds distinct
    members instead of events: a member already in it fits again (its time is refreshed), a new one fits
    while fewer than ``limit`` are in it (a provider's "unique recipients per moving 24 hours").
    ``await count.wait(...)`` says, counting nothing, how many seconds until it would fit (0.0: now).
    Redis holds keyed hashes of ``who`` and ``member``, never a number or an address.
    """

    def __init__(self, redis: Redis, prefix: str, key: bytes) -> None:
        self.redis, self.prefix, self.key = redis, prefix, key

    async def __call__(
        self, name: str, who: str, limit: int, window: float, member: str | None = None
    ) -> bool:
        return await self._run(name, who, limit, window, member, "take") == 0

    async def wait(self, name: str, who: str, limit: int, window: float, member: str | None = None) -> float:
        return await self._run(name, who, limit, window, member, "peek")

    async def _run(
        self, name: str, who: str, limit: int, window: float, member: str | None, mode: str
    ) -> float:
        hashed = self._hash(f"{name}:{who}")
        if member is None:
            events = SlidingWindow(self.redis, self.prefix, name, limit, window)
            return await (events.take(hashed) if mode == "take" else events.wait_for(hashed))
        key = f"{self.prefix}:distinct:{name}:{hashed}"
        window_ms = max(1, int(window * 1000))
        seen = self._hash(f"{name}:member:{member}")
        wait_ms = int(await self.redis.eval(_DISTINCT, 1, key, limit, window_ms, mode, seen))
        return wait_ms / 1000.0

    def _hash(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()[:32]


def shared_count(redis: Redis, prefix: str, key: bytes) -> SharedCount:
    """The hub's ``SharedCount`` for an adapter (``Channel.use_shared_limits``)."""
    return SharedCount(redis, prefix, key)
