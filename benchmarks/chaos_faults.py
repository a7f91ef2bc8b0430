"""The chaos soak's faults, on three tracks that run at once until the window closes:

* kills: every ``kill_every`` s (± 50 %), a random `hub worker` gets SIGKILL and is restarted 1-5 s later;
* smsbox: stopped for ``smsbox_down`` s, first in the first third of the window, then every ``smsbox_every``;
* one at a time: the private Redis killed and restarted empty, or a provider burst of ``burst`` s
  (Telegram 429 storm / 503, Synapse 429 / 503 / lost answers through the fault proxy, Kannel's sendsms
  429 / 503 through the proxy, the SMTP sink answering 421). A Redis restart waits until every 429's
  retry delay has run out: the hub keeps a provider's pause in Redis, and a Redis that forgot it is a
  separate question from whether the hub obeys a retry-after (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.chaos_peers import start_smsbox, stop_smsbox

PROVIDER_FAULTS = (
    "telegram-429",
    "telegram-503",
    "matrix-429",
    "matrix-503",
    "matrix-lost-answer",
    "sms-429",
    "sms-503",
    "email-421",
)


@dataclass
class Peers:
    redis: Any
    workers: Any
    smtp: Any
    fake: Any
    kannel: Any
    sms_proxy: Any
    matrix_proxy: Any


@dataclass
class Chaos:
    """The fault tracks and what they did (``log``: seconds into the window, what, detail)."""

    peers: Peers
    rng: random.Random
    window: float
    kill_every: float = 30.0
    smsbox_every: float = 600.0
    smsbox_down: float = 60.0
    burst: tuple[float, float] = (5.0, 15.0)
    log: list[tuple[float, str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: Held by whoever talks to Redis from this process in a way a restart must not cut (publishing).
    redis_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: float = 0.0

    def note(self, what: str, detail: str = "") -> None:
        self.log.append((round(time.monotonic() - self.started, 1), what, detail))
        self.counts[what] = self.counts.get(what, 0) + 1
        print(f"   [{time.monotonic() - self.started:6.0f} s] {what} {detail}", flush=True)

    def left(self) -> float:
        return self.window - (time.monotonic() - self.started)

    async def run(self, ping_redis: Any) -> None:
        self.started = time.monotonic()
        await asyncio.gather(self._kills(), self._smsbox(), self._serial(ping_redis), self._supervise())

    async def _supervise(self) -> None:
        """Start again a worker that exited by itself (as systemd's Restart= would): `hub worker` refuses
        to start while Redis is down, so one restarted after a kill during a Redis restart exits."""
        workers = self.peers.workers
        while self.left() > 0:
            await asyncio.sleep(2.0)
            for slot in workers.died():
                self.note("worker exited by itself, restarted", f"slot {slot}")
                workers.start(slot)

    # ------------------------------------------------------------------------------------ tracks

    async def _kills(self) -> None:
        workers = self.peers.workers
        while True:
            await asyncio.sleep(self.kill_every * self.rng.uniform(0.5, 1.5))
            if self.left() <= 0:
                return
            alive = workers.alive()
            if not alive:
                continue
            slot = self.rng.choice(alive)
            await asyncio.to_thread(workers.kill, slot)
            self.note("worker SIGKILL", f"slot {slot}")
            await asyncio.sleep(self.rng.uniform(1.0, 5.0))
            workers.start(slot)

    async def _smsbox(self) -> None:
        at = self.window * self.rng.uniform(0.1, 0.3)
        while at + self.smsbox_down <= self.window:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - self.started)))
            await asyncio.to_thread(stop_smsbox, self.peers.kannel)
            self.note("smsbox stopped", f"for {self.smsbox_down:.0f} s")
            await asyncio.sleep(self.smsbox_down)
            await asyncio.to_thread(start_smsbox, self.peers.kannel)
            self.note("smsbox started")
            at += self.smsbox_every

    def holds_end(self) -> float:
        p = self.peers
        fake_end = max((h[1] for h in p.fake.holds), default=0.0)
        return max(fake_end, p.sms_proxy.hold_until(), p.matrix_proxy.hold_until())

    async def _serial(self, ping_redis: Any) -> None:
        kinds: list[str] = []
        await asyncio.sleep(self.rng.uniform(3.0, 8.0))
        while self.left() > self.burst[0]:
            if not kinds:  # every fault once per cycle, Redis twice, in a new order each cycle
                kinds = [*PROVIDER_FAULTS, "redis-restart", "redis-restart"]
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            seconds = min(self.rng.uniform(*self.burst), max(1.0, self.left()))
            if kind == "redis-restart":
                await asyncio.sleep(max(0.0, self.holds_end() - time.monotonic()) + 0.5)
                down = self.rng.uniform(1.0, 4.0)
                async with self.redis_lock:
                    await asyncio.to_thread(self.peers.redis.restart, down)
                    await ping_redis()
                self.note("redis restarted empty", f"down {down:.1f} s")
            else:
                detail = self._provider(kind, seconds)
                self.note(kind, detail)
                await asyncio.sleep(seconds)
            await asyncio.sleep(self.rng.uniform(2.0, 8.0))

    def _provider(self, kind: str, seconds: float) -> str:
        p = self.peers
        retry = round(self.rng.uniform(1.0, 5.0), 1)
        if kind == "telegram-429":
            fixed = self.rng.choice([None, 2, 3])  # None: the storm's whole seconds left, as Telegram does
            p.fake.storm(seconds, retry_after=fixed)
            return f"{seconds:.0f} s, retry_after {fixed or 'time left'}"
        if kind == "telegram-503":
            p.fake.outage(seconds, code=self.rng.choice([502, 503]))
            return f"{seconds:.0f} s"
        if kind == "matrix-429":
            p.matrix_proxy.burst(seconds, code=429, retry_after=retry)
            return f"{seconds:.0f} s, retry_after_ms {int(retry * 1000)}"
        if kind == "matrix-503":
            p.matrix_proxy.burst(seconds, code=503)
            return f"{seconds:.0f} s"
        if kind == "matrix-lost-answer":
            p.matrix_proxy.burst(seconds, code=503, forward=True)
            return f"{seconds:.0f} s: Synapse posts, the answer is replaced by a 503"
        if kind == "sms-429":
            p.sms_proxy.burst(seconds, code=429, retry_after=retry)
            return f"{seconds:.0f} s, Retry-After {retry:g}"
        if kind == "sms-503":
            p.sms_proxy.burst(seconds, code=503)
            return f"{seconds:.0f} s"
        if kind == "email-421":
            p.smtp.refuse(seconds)
            return f"{seconds:.0f} s"
        raise ValueError(kind)

    def calm(self) -> None:
        """Every switch off (the drain after the window runs without faults)."""
        p = self.peers
        p.fake.outage(0)
        p.fake.storm(0)
        p.sms_proxy.clear()
        p.matrix_proxy.clear()
        p.smtp.refuse(0)
