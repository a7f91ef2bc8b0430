"""A fault-injecting HTTP reverse proxy on 127.0.0.1: in front of a real peer (Synapse, Kannel's sendsms)
it answers 429 (with a retry delay) or 503 in bursts, or loses responses, and records who came back early.

    proxy = FaultProxy("http://127.0.0.1:8008", match=r"/send/", flavour="matrix").start()
    ...                                   # point the client at proxy.url
    proxy.burst(10, code=429, retry_after=3.0)   # 429 for 10 s, each saying "retry after 3 s"
    proxy.burst(10, code=503)                    # the peer "down" for 10 s
    proxy.burst(10, code=503, forward=True)      # the peer acts, but its answer is lost (a 503 instead)
    assert proxy.violations(grace=0.5) == []
    proxy.stop()

Only requests whose path matches ``match`` are faulted; the rest pass through untouched. ``flavour``
shapes the error body: ``matrix`` (``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, as the Matrix spec says)
or ``plain`` (text). 429s always carry a ``Retry-After`` header (whole seconds, RFC 9110 section 10.2.3).
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from tests.fakes.threaded import ThreadedServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class FaultProxy(ThreadedServer):
    """A reverse proxy to ``upstream`` with switchable bursts of errors on requests matching ``match``."""

    thread_name = "fault-proxy"

    def __init__(self, upstream: str, *, match: str = ".*", flavour: str = "plain") -> None:
        self.upstream = upstream.rstrip("/")
        self.match = re.compile(match)
        self.flavour = flavour
        self._lock = threading.Lock()
        self._burst: tuple[float, int, float | None, bool] | None = None  # (ends, code, retry_after, forward)
        #: Answers given instead of the peer's, by HTTP status; and requests forwarded whose answer was lost.
        self.injected: dict[int, int] = {}
        self.lost_answers = 0
        self.forwarded = 0
        #: Every 429 answered: (answered at, until) on ``time.monotonic()``.
        self.holds: list[tuple[float, float]] = []
        #: Matching requests that arrived while a 429 held them off: (arrived at, 429 answered at, until).
        self.early: list[tuple[float, float, float]] = []
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    # ------------------------------------------------------------------------------------ switches

    def burst(
        self, seconds: float, *, code: int, retry_after: float | None = None, forward: bool = False
    ) -> None:
        """For ``seconds``: answer matching requests ``code``; a 429 says ``retry_after`` (default 1 s).
        ``forward``: pass the request on first and lose the peer's answer (it acted; the client can't know).
        """
        if code == 429 and retry_after is None:
            retry_after = 1.0
        with self._lock:
            self._burst = (time.monotonic() + seconds, code, retry_after, forward)

    def clear(self) -> None:
        with self._lock:
            self._burst = None

    def hold_until(self) -> float:
        """When the last 429 handed out stops holding clients off (``time.monotonic()``; 0 if none)."""
        with self._lock:
            return max((h[1] for h in self.holds), default=0.0)

    def violations(self, grace: float = 0.0) -> list[tuple[float, float, float]]:
        """Matching requests that came more than ``grace`` s after a 429 and before its delay ran out."""
        with self._lock:
            return [e for e in self.early if e[0] - e[1] > grace]

    # ------------------------------------------------------------------------------------ lifecycle

    async def _serve(self, sock: socket.socket) -> None:
        # Long polls (Matrix /sync) pass through: no total timeout, only a generous read timeout.
        self._session = ClientSession(timeout=ClientTimeout(total=None, sock_read=300), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------------ HTTP

    def _fault_for(self, path: str) -> tuple[int, float | None, bool] | None:
        """Record an arrival on a matching path; the burst in force, if any."""
        if not self.match.search(path):
            return None
        now = time.monotonic()
        with self._lock:
            self.holds = [h for h in self.holds if h[1] > now - 60]
            for answered, until in self.holds:
                if answered < now < until:
                    self.early.append((now, answered, until))
                    break
            burst = self._burst
            if burst is None or burst[0] <= now:
                return None
            return burst[1], burst[2], burst[3]

    def _error(self, code: int, retry_after: float | None) -> web.Response:
        headers: dict[str, str] = {}
        if code == 429:
            assert retry_after is not None
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
            now = time.monotonic()
            with self._lock:
                self.holds.append((now, now + retry_after))
        with self._lock:
            self.injected[code] = self.injected.get(code, 0) + 1
        if self.flavour == "matrix":
            body: dict[str, Any] = (
                {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests"}
                if code == 429
                else {"errcode": "M_UNKNOWN", "error": "Service Unavailable"}
            )
            if code == 429:
                body["retry_after_ms"] = int((retry_after or 0) * 1000)
            return web.json_response(body, status=code, headers=headers)
        text = "Too Many Requests" if code == 429 else "Service Unavailable"
        return web.Response(status=code, text=text, headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._fault_for(request.path)
        if fault is not None and not fault[2]:
            return self._error(fault[0], fault[1])
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body or None, headers=headers
            ) as upstream:
                payload = await upstream.read()
                status, out = (
                    upstream.status,
                    {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
                )
        except (ClientError, OSError):  # the peer is down (or the proxy is closing): a gateway's answer
            return web.Response(status=502, text="Bad Gateway")
        with self._lock:
            self.forwarded += 1
        if fault is not None:  # the peer acted; its answer is lost on the way back
            with self._lock:
                self.lost_answers += 1
            return self._error(fault[0], fault[1])
        return web.Response(status=status, body=payload, headers=out)
