"""The pacer adapters get waits out a Redis restart on every call, slots included (found by the chaos soak:
Telegram's slot pacing raised Redis's ConnectionError into the adapter, which made the send `failed`)."""

from __future__ import annotations

import redis.exceptions

from channels.base import Rate
from hub.delivery.sender import SteadyPacer


class _Flaky:
    """A pacer whose Redis is down for the first ``down`` calls of each method."""

    def __init__(self, down: int) -> None:
        self.down, self.calls = down, {"acquire": 0, "release": 0, "paused_for": 0}

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.calls[name] <= self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")

    async def acquire(self, rates, lane="bulk", *, max_pause=None):  # type: ignore[no-untyped-def]
        self._call("acquire")
        return "permit"

    async def release(self, permit):  # type: ignore[no-untyped-def]
        self._call("release")

    async def paused_for(self, key):  # type: ignore[no-untyped-def]
        self._call("paused_for")
        return 3.0


async def test_acquire_waits_for_redis_and_release_never_raises(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hub.delivery.sender as sender

    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(sender.asyncio, "sleep", no_sleep)
    inner = _Flaky(down=2)
    pacer = SteadyPacer(inner)
    assert await pacer.acquire([Rate("tg:bot", 30)], "bulk", max_pause=1.0) == "permit"
    assert inner.calls["acquire"] == 3 and slept == [1.0, 1.0]
    await pacer.release("permit")  # Redis still down for this call: swallowed, the slot expires by itself
    assert inner.calls["release"] == 1
    assert await pacer.paused_for("sms:kannel:circuit") == 0.0  # Redis down: no pause known, no raise
