"""Delivery of the fake Cloud API's webhooks: a queue in the fake's event loop, a few workers, retries.

Meta POSTs every notification signed with ``X-Hub-Signature-256`` and retries anything but a 200. Here one
job is one message's webhooks, POSTed in order by one worker (the fake shuffles a job before queueing it
when asked); different jobs go concurrently, as Meta's do. Tests wait for the queue to drain instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import ClientSession, ClientTimeout

from tests.fakes.whatsapp_wire import sign

#: One job: (kind "status:<status>" | "message", wamid, the change's value, seconds to wait before it).
Job = list[tuple[str, str, dict[str, Any], float]]


class WebhookQueue:
    """Signed POSTs to wherever ``target()`` says at delivery time (no URL or secret: dropped)."""

    def __init__(
        self,
        target: Callable[[], tuple[str | None, str | None]],
        encode: Callable[[dict[str, Any]], bytes],
        *,
        concurrency: int = 8,
        attempts: int = 3,
    ) -> None:
        self.target = target
        self.encode = encode
        self.concurrency = concurrency
        #: POSTs per webhook before giving up (Meta keeps retrying far longer).
        self.attempts = attempts
        #: Every POST attempt: (kind, wamid, HTTP status or 0 when the connection failed).
        self.deliveries: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Called inside the fake's running loop."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._workers = [self._loop.create_task(self._work()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def put(self, job: Job) -> None:
        """Queue a job from any thread; nothing happens when no URL and secret are configured."""
        url, secret = self.target()
        if not job or url is None or secret is None or self._loop is None or self._queue is None:
            return
        with self._lock:
            self._pending += 1
        self._loop.call_soon_threadsafe(self._queue.put_nowait, job)

    def idle(self) -> bool:
        with self._lock:
            return self._pending == 0

    def wait(self, timeout: float = 10.0) -> None:
        """Block until every queued job was POSTed (or gave up); AssertionError on timeout."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                raise AssertionError(f"{self._pending} webhook jobs still pending after {timeout}s")

    async def _work(self) -> None:
        assert self._queue is not None
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            while True:
                job = await self._queue.get()
                try:
                    for kind, wamid, value, delay in job:
                        if delay:
                            await asyncio.sleep(delay)
                        await self._post(session, kind, wamid, value)
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()

    async def _post(self, session: ClientSession, kind: str, wamid: str, value: dict[str, Any]) -> None:
        url, secret = self.target()
        if url is None or secret is None:
            return
        raw = self.encode(value)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, raw)}
        for attempt in range(self.attempts):
            try:
                async with session.post(url, data=raw, headers=headers) as resp:
                    status = resp.status
            except Exception:
                status = 0
            with self._lock:
                self.deliveries.append((kind, wamid, status))
            if status == 200:
                return
            await asyncio.sleep(0.05 * 2**attempt)
