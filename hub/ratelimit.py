"""Provider limits shared by every worker on every machine, kept in Redis (DESIGN.md rule 5).

A GCRA per rate key, checked and recorded for all of a send's keys in one Lua call, on Redis' own clock,
so workers with skewed clocks still agree. Over any window the count stays within the rate plus one
send (plus half a send of catch-up on fast keys). The urgent lane never queues behind bulk: while urgent sends
are waiting on a key, bulk sends on that key slow to ``bulk_share`` of the rate and leave the rest free.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from redis.asyncio import Redis

from channels.base import Lane, Rate

_GCRA = """
-- Waits are whole milliseconds, rounded up: Redis truncates a fraction to 0, which would let a send
-- through unrecorded.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lane = ARGV[1]
local share = tonumber(ARGV[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 + i])
  if lane == 'urgent' then
    redis.call('SET', key .. ':urgent', '1', 'PX', 2000)
  elseif redis.call('EXISTS', key .. ':urgent') == 1 then
    interval = interval / share
  end
  local paused = redis.call('PTTL', key .. ':pause')
  if paused > 0 then wait = math.max(wait, paused) end
  local tat = tonumber(redis.call('GET', key) or '0')
  -- At high rates a waiter wakes a few ms late; up to `slack` of that is won back by the next send, so
  -- the long-run rate is the declared one. Slow keys (one per second per chat) get no slack at all.
  local slack = 0
  if interval < 100 then slack = math.min(interval / 2, 10) end
  if tat < now - slack then tat = now - slack end
  if tat > now then wait = math.max(wait, tat - now) end
  tats[i] = tat + interval
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tostring(tats[i]), 'PX', math.ceil(tats[i] - now) + 1000)
end
return 0
"""


class RedisPacer:
    """The hub's ``channels.base.Pacer``: adapters name their rates, this makes all workers obey them."""

    def __init__(self, redis: Redis, prefix: str = "hub", bulk_share: float = 0.8) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:rate:"
        self.bulk_share = bulk_share
        self._script = redis.register_script(_GCRA)

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        if not rates:
            return
        keys = [self.prefix + r.key for r in rates]
        intervals = [f"{1000.0 * r.period / r.count:.3f}" for r in rates]
        while True:
            wait_ms = int(await self._script(keys=keys, args=[lane, self.bulk_share, *intervals]))
            if wait_ms <= 0:
                return
            # A little jitter keeps workers that woke together from colliding again.
            await asyncio.sleep(wait_ms / 1000.0 + random.uniform(0, 0.002))

    async def pause(self, key: str, seconds: float) -> None:
        if seconds > 0:
            await self.redis.set(self.prefix + key + ":pause", "1", px=max(1, int(seconds * 1000)))
