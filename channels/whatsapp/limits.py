"""Counts the adapter keeps itself: the messaging-limit tier, inbound messages per number, seen messages.

Each is counted with the hub's shared count (Redis, every process together) once the hub hands it over
(``Channel.use_shared_limits``); without one, or while Redis fails, each process keeps its own count,
which is never looser per process than the shared one.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("channels.whatsapp")

#: The hub's shared count: ``await count(name, who, limit, window)`` records one event of ``who`` and
#: says whether it fits ``limit`` per ``window`` seconds; with ``member=``, the window holds distinct
#: members and a member already in it refreshes and fits; ``await count.wait(...)`` (same arguments)
#: says in how many seconds it would fit, counting nothing (hub.ratelimit.SharedCount).
SharedCount = Callable[..., Awaitable[Any]]


class DistinctWindow:
    """At most ``limit`` distinct members in any moving ``window`` seconds, in this process."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._last: OrderedDict[str, float] = OrderedDict()  # member → last seen, oldest first

    def admit(self, member: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self._last and next(iter(self._last.values())) <= now - self.window:
            self._last.popitem(last=False)
        if member not in self._last and len(self._last) >= self.limit:
            return False
        self._last[member] = now
        self._last.move_to_end(member)
        return True

    def frees_in(self, now: float | None = None) -> float:
        """Seconds until the oldest member leaves the window (and a new one fits)."""
        now = time.monotonic() if now is None else now
        if not self._last:
            return 0.0
        return max(0.0, next(iter(self._last.values())) + self.window - now)


class Tier:
    """The messaging limit: unique users reached by templates per moving window (0: unlimited).

    Meta counts the users a portfolio reaches outside their service windows; the adapter cannot see
    those windows for templates, so it counts every template's recipient: never more than Meta, at
    worst a little early. A recipient already counted in the window fits again (a correction, a retry).
    """

    def __init__(self, key: str, limit: int, window: float, retry: float | None = None) -> None:
        self.key, self.limit, self.window = key, limit, window
        #: The configured wait; unset: when the window frees (or 1/24 of it when the count cannot say).
        self.retry = retry
        self.default_retry = max(1.0, window / 24)
        self.shared: SharedCount | None = None
        self._local = DistinctWindow(limit, window)

    @property
    def reason(self) -> str:
        hours = self.window / 3600
        span = f"{hours:g} h" if hours >= 1 else f"{self.window:g} s"
        return (
            f"WhatsApp messaging limit reached: {self.limit} recipients per {span}; "
            "continues when the window frees"
        )

    async def _frees_in_shared(self, member: str) -> float:
        """When the shared window takes a new member again, as the count reports it (``count.wait``)."""
        wait = getattr(self.shared, "wait", None)
        seconds = await wait("wa-tier", self.key, self.limit, self.window, member=member) if wait else 0.0
        return seconds if seconds > 0 else self.default_retry

    @property
    def lag(self) -> float:
        """Meta counts a recipient when its message arrives, a little after this count took it: a wait
        computed here ends this much later, so the retry does not find Meta's window still full."""
        return min(60.0, max(0.5, self.window / 100))

    async def sent(self, member: str) -> None:
        """Meta took a template for ``member``: its place in the window starts again from now.

        ``admit`` counted it before the send, which may wait at the pacer; Meta counts it on arrival.
        Without this the hub's window would free before Meta's and the next recipient meet 131048.
        """
        if self.limit <= 0:
            return
        if self.shared is not None:
            try:
                await self.shared("wa-tier", self.key, self.limit, self.window, member=member)
                return
            except Exception:  # Redis down: admit counted here too
                pass
        self._local.admit(member)

    async def admit(self, member: str) -> float | None:
        """None when ``member`` fits the tier, else the seconds after which to try again."""
        if self.limit <= 0:
            return None
        if self.shared is not None:
            try:
                if await self.shared("wa-tier", self.key, self.limit, self.window, member=member):
                    return None
                return self.retry or await self._frees_in_shared(member) + self.lag
            except Exception as exc:  # Redis down: this process's own count rather than none at all
                log.warning("whatsapp: shared tier count unavailable (%s); counting here", type(exc).__name__)
        if self._local.admit(member):
            return None
        return self.retry or self._local.frees_in() + self.lag


class PerNumber:
    """At most ``per_minute`` inbound messages per number in any 60 s (0: no limit).

    Answers inside the service window cost nothing, but one phone (or two auto-responders answering
    each other) must not make the hub send reply after reply.
    """

    def __init__(self, per_minute: int, *, max_numbers: int = 100_000) -> None:
        self.per_minute, self.max_numbers = per_minute, max_numbers
        self.shared: SharedCount | None = None
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    async def admit(self, number: str) -> bool:
        if self.per_minute <= 0:
            return True
        if self.shared is not None:
            try:
                return bool(await self.shared("wa-in", number, self.per_minute, 60.0))
            except Exception as exc:
                log.warning(
                    "whatsapp: shared inbound limit unavailable (%s); counting here", type(exc).__name__
                )
        now = time.monotonic()
        times = self._seen.pop(number, None) or deque()
        while times and now - times[0] >= 60.0:
            times.popleft()
        allowed = len(times) < self.per_minute
        if allowed:
            times.append(now)
        self._seen[number] = times
        while len(self._seen) > self.max_numbers:
            self._seen.popitem(last=False)
        return allowed


class Seen:
    """Message ids already taken: Meta delivers a webhook again when an answer was late or lost."""

    def __init__(self, window: float = 86400.0, size: int = 10_000) -> None:
        self.window, self.size = window, size
        self.shared: SharedCount | None = None
        self._ids: OrderedDict[str, None] = OrderedDict()

    async def first(self, message_id: str) -> bool:
        """True the first time ``message_id`` is seen (by any process, with the shared count)."""
        if self.shared is not None:
            try:
                return bool(await self.shared("wa-seen", message_id, 1, self.window))
            except Exception as exc:
                log.warning("whatsapp: shared message ids unavailable (%s)", type(exc).__name__)
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
