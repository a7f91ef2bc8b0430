"""Caching for public documents: rendered bytes kept in memory, strong ETags, ``304 Not Modified``.

Public pages and feeds are read far more often than they change, and an old phone on a slow link
should not download a page it already has. A rendered document is kept per key (``(path, lang)``)
until the earlier of the office status's next change (``changes_at``, hub time, so the rehearsal
clock moves it too) and ``settings.public.cache_seconds`` of real time; and everything is dropped when
the database's stamp (``hub.freshness``, written with every publication, cancellation or status edit in
any process) moves, which is read at most once every ``STAMP_EVERY`` seconds. So an hours boundary shows
exactly on time and a publication within about a second. The ETag is the body's hash, so
any two processes serving the same bytes agree on it, and a client's ``If-None-Match`` costs no
rendering while the entry lives.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from hub import freshness
from hub.clock import utcnow

#: Entries kept at most; the oldest go first (1,000 offices x 2 languages x a few documents fit).
MAX_ENTRIES = 20_000
#: How often (seconds, real time) a process reads the stamp of ``hub.freshness``.
STAMP_EVERY = 1.0
#: The longest ``max-age`` given to browsers and proxies.
BROWSER_SECONDS = 60


@dataclass(frozen=True)
class Rendered:
    """What a builder returns: the document and how long it stays true."""

    body: bytes
    media_type: str = "text/html; charset=utf-8"
    #: Hub time (naive UTC) when the content may change by itself: the status's ``changes_at``.
    changes_at: datetime | None = None
    status_code: int = 200
    #: Extra response headers (``Content-Disposition``...), cached with the body.
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Entry:
    rendered: Rendered
    etag: str
    expires: float  # time.monotonic()


def etag_of(body: bytes) -> str:
    """A strong validator: the same bytes give the same tag in every process."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison, as ``If-None-Match`` requires: ``W/`` prefixes are ignored."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


class PublicCache:
    """Rendered documents by key; one per app (``for_app``), shared by pages and feeds."""

    def __init__(self, seconds: float, max_entries: int = MAX_ENTRIES) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._building: dict[Hashable, asyncio.Future[_Entry]] = {}
        self._stamp: str | None = None
        self._stamp_read = -STAMP_EVERY
        #: Counts the times everything was dropped: a build begun before a drop is not kept after it.
        self._epoch = 0

    async def follow(self, hub: Any) -> None:
        """Drop every entry if the stamp moved since it was last read (read at most once a second)."""
        now = time.monotonic()
        if now - self._stamp_read < STAMP_EVERY:
            return
        self._stamp_read = now
        async with hub.db.session() as session:
            current = await freshness.stamp(session)
        if current != self._stamp:
            self._entries.clear()
            self._stamp = current
            self._epoch += 1

    def clear(self) -> None:
        self._entries.clear()

    def _fresh(self, key: Hashable) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry.expires or _past(entry.rendered.changes_at):
            del self._entries[key]
            return None
        return entry

    async def get(self, key: Hashable, build: Callable[[], Awaitable[Rendered]]) -> tuple[_Entry, float]:
        """The entry for ``key`` (built once however many requests wait for it) and its seconds left."""
        entry = self._fresh(key)
        if entry is None:
            pending = self._building.get(key)
            if pending is not None:
                await asyncio.wait([pending])  # a waiter's own cancellation still propagates
                if not pending.cancelled() and pending.exception() is None:
                    entry = pending.result()
            if entry is None:  # nobody building, or that build failed: this request builds
                entry = await self._build(key, build)
        return entry, max(0.0, entry.expires - time.monotonic())

    async def _build(self, key: Hashable, build: Callable[[], Awaitable[Rendered]]) -> _Entry:
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        mine = key not in self._building
        if mine:
            self._building[key] = future
        epoch = self._epoch
        try:
            rendered = await build()
            entry = (
                self._store(key, rendered) if epoch == self._epoch else self._store(key, rendered, keep=False)
            )
            future.set_result(entry)
            return entry
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when none waited
            else:  # cancelled (the client left): whoever waits builds for itself
                future.cancel()
            raise
        finally:
            if mine:
                del self._building[key]

    def _store(self, key: Hashable, rendered: Rendered, keep: bool = True) -> _Entry:
        seconds = self.seconds
        if rendered.changes_at is not None:
            seconds = min(seconds, (rendered.changes_at - utcnow()).total_seconds())
        entry = _Entry(rendered, etag_of(rendered.body), time.monotonic() + max(0.0, seconds))
        if keep and seconds > 0 and rendered.status_code == 200:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry


def _past(changes_at: datetime | None) -> bool:
    return changes_at is not None and utcnow() >= changes_at


def for_app(request: Request) -> PublicCache:
    """The app's cache, made on first use with ``settings.public.cache_seconds``."""
    state = request.app.state
    cache = getattr(state, "public_cache", None)
    if cache is None:
        cache = PublicCache(state.hub.settings.public.cache_seconds)
        state.public_cache = cache
    return cache


async def serve(request: Request, key: Hashable, build: Callable[[], Awaitable[Rendered]]) -> Response:
    """Answer a public GET from the cache: 200 with the body, or 304 when the client has it.

    ``key`` must name everything the body depends on besides the status's time (``(path, lang)``,
    plus e.g. a size); ``build`` renders on a miss. Language comes from the URL (``?lang=``), never
    from ``Accept-Language``, so no ``Vary`` is needed for it and shared caches may keep each URL.
    """
    cache = for_app(request)
    await cache.follow(request.app.state.hub)
    entry, left = await cache.get(key, build)
    rendered = entry.rendered
    if rendered.status_code != 200:  # a 404 page and the like: never kept, never validated
        headers = {"Cache-Control": "no-cache", **rendered.headers}
        return Response(rendered.body, rendered.status_code, headers=headers, media_type=rendered.media_type)
    # A browser (or a proxy) keeps it a minute at most: it cannot hear of a publication; then it asks
    # again with If-None-Match, which costs a 304.
    max_age = int(min(left, BROWSER_SECONDS))
    headers = {"ETag": entry.etag, "Cache-Control": f"public, max-age={max_age}", **rendered.headers}
    if matches(request.headers.get("if-none-match"), entry.etag):
        return Response(status_code=304, headers=headers)
    return Response(rendered.body, rendered.status_code, headers=headers, media_type=rendered.media_type)
