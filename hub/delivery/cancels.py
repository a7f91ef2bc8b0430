"""Whether a message was cancelled, as the senders of one process see it (docs/design.md, "Cancel")."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from hub.context import Hub
from hub.queue import REDIS_DOWN

#: A sender trusts an answer about a message's cancel key for this long after it asked; ``delivery.cancel``
#: returns no sooner than this after it set the key. So a hand-off after cancel returned rests on a read
#: sent after the key was set (durations measured on each side, no shared clock needed), and the process
#: reads the key once per message per window instead of once per hand-off (at 10,000 sends/s that read
#: was more than half of a worker's CPU).
CANCEL_FRESH = 0.05


def cancel_key(prefix: str, message_id: int) -> str:
    """Set by `hub cancel` (``delivery.cancel``); a sender checks it before every hand-off."""
    return f"{prefix}:cancelled:{message_id}"


class CancelWatch:
    """This process's view of the cancel keys: one read per message per ``CANCEL_FRESH`` window.

    Every job of the process shares it. A read answers the hand-offs that come within ``CANCEL_FRESH``
    of the moment the read was started; a later hand-off waits for a new read. A cancelled message
    stays cancelled. While Redis is down the answer is "not cancelled": the database flag is read at
    every flush.
    """

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self.known: set[int] = set()
        self.reads: dict[int, tuple[float, asyncio.Future[bool | None]]] = {}

    async def cancelled(self, message_id: int) -> bool:
        if message_id in self.known:
            return True
        now = time.monotonic()
        read = self.reads.get(message_id)
        if read is None or now - read[0] > CANCEL_FRESH:
            if len(self.reads) > 1000:  # messages long finished
                self.reads = {m: r for m, r in self.reads.items() if now - r[0] < 60}
            read = self.reads[message_id] = (now, asyncio.ensure_future(self._read(message_id)))
        hit = await asyncio.shield(read[1])
        if hit:
            self.known.add(message_id)
        return bool(hit)

    async def _read(self, message_id: int) -> bool | None:
        try:
            return bool(await self.redis.exists(cancel_key(self.prefix, message_id)))
        except REDIS_DOWN:
            self.reads.pop(message_id, None)  # ask again next time
            return None


_watches: weakref.WeakKeyDictionary[Any, CancelWatch] = weakref.WeakKeyDictionary()


def cancel_watch(hub: Hub) -> CancelWatch:
    """The process's watch for this hub's Redis client (one per client: tests build several hubs)."""
    watch = _watches.get(hub.redis)
    if watch is None or watch.prefix != hub.queue.prefix:
        watch = _watches[hub.redis] = CancelWatch(hub.redis, hub.queue.prefix)
    return watch
