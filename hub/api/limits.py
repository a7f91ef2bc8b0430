"""Per-client limits of the API, counted in Redis so every API process shares them (issue 9).

* API-key guessing: a client address is told "wrong key" (401) at most ``KEY_GUESSES`` times within
  ``KEY_GUESS_WINDOW`` seconds, exactly, however many requests race; after that every request that
  carries a key, right or wrong, gets 429 (with ``Retry-After``) until the oldest failure leaves the
  window. Keys are 192-bit random secrets, so this is defence in depth; it also stops a misconfigured
  intake system from hammering the key table.
* The public email-subscription form: at most ``EMAIL_SUBSCRIBES`` requests per client address per
  ``EMAIL_SUBSCRIBE_WINDOW`` seconds, so one client cannot make the hub mail address after address.

A client is its address as the web server sees it (uvicorn honours ``X-Forwarded-For`` from the proxies
in ``FORWARDED_ALLOW_IPS``, by default only 127.0.0.1). Redis holds a keyed hash of it, never the
address itself.
"""

from __future__ import annotations

import math
import time

from fastapi import Request

from hub import signing
from hub.context import Hub
from hub.errors import HubError
from hub.logs import log
from hub.queue import REDIS_DOWN
from hub.ratelimit import SlidingWindow

KEY_GUESSES = 10
KEY_GUESS_WINDOW = 600.0
EMAIL_SUBSCRIBES = 5
EMAIL_SUBSCRIBE_WINDOW = 600.0


class TooManyRequests(HubError):
    """A client went over a limit; ``retry_after`` says when it may try again."""

    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


def client(hub: Hub, request: Request) -> str:
    """The client's address as a keyed hash: the same per address, useless to whoever reads Redis."""
    host = request.client.host if request.client else "unknown"
    return signing.digest(hub.secret, f"client:{host}")[:32]


def _window(hub: Hub, name: str, limit: int, window: float) -> SlidingWindow:
    assert hub.redis is not None
    return SlidingWindow(hub.redis, hub.settings.redis.key_prefix, name, limit, window)


async def key_guesses_left(hub: Hub, who: str) -> None:
    """Refuse (429) a client whose wrong keys fill the window, before any database lookup.

    With Redis down the check is skipped (and logged): the database is the truth and intake systems
    keep posting updates during a Redis outage; guessing a 192-bit key stays hopeless meanwhile.
    """
    if hub.redis is None:
        return
    try:
        wait = await _guesses(hub).wait_for(who)
    except REDIS_DOWN:
        _throttle_down()
        return
    if wait:
        raise _too_many_guesses(wait)


async def wrong_key(hub: Hub, who: str) -> None:
    """Count a wrong key presented by ``who``; 429 instead of 401 when it does not fit the window.

    Counting and deciding are one step in Redis, so however many wrong keys race in from one address
    over however many processes, exactly ``KEY_GUESSES`` of them per window are answered "wrong".
    """
    if hub.redis is None:
        return
    try:
        wait = await _guesses(hub).take(who)
    except REDIS_DOWN:
        _throttle_down()
        return
    if wait:
        raise _too_many_guesses(wait)


_last_warned = 0.0


def _throttle_down() -> None:
    """Say once a minute (not once per request) that keys are checked without the throttle."""
    global _last_warned
    now = time.monotonic()
    if now - _last_warned >= 60:
        _last_warned = now
        log.warning("api_key_throttle_unavailable", reason="redis down; keys checked without a limit")


def _guesses(hub: Hub) -> SlidingWindow:
    return _window(hub, "api-key", KEY_GUESSES, KEY_GUESS_WINDOW)


def _too_many_guesses(wait: float) -> TooManyRequests:
    return TooManyRequests(
        f"too many requests with a wrong API key from this address; try again in {max(1, math.ceil(wait))} s",
        retry_after=wait,
    )


#: The 429 a citizen reads, Bahasa Indonesia first (``{minutes}`` is filled in).
SUBSCRIBE_TOO_OFTEN = {
    "id": "Terlalu banyak permintaan berlangganan dari alamat Anda. Silakan coba lagi dalam {minutes} menit.",
    "en": "Too many subscription requests from your address. Please try again in {minutes} minutes.",
}


async def email_subscribe(hub: Hub, who: str, locale: str) -> None:
    """Count one subscription request from ``who``, or refuse it (429) over the limit.

    With Redis down this raises, and the API answers 503: the form is public, so it is not opened
    without its limit.
    """
    if hub.redis is None:
        return
    wait = await _window(hub, "email-subscribe", EMAIL_SUBSCRIBES, EMAIL_SUBSCRIBE_WINDOW).take(who)
    if wait:
        text = SUBSCRIBE_TOO_OFTEN.get(locale, SUBSCRIBE_TOO_OFTEN["id"])
        raise TooManyRequests(text.format(minutes=max(1, math.ceil(wait / 60))), retry_after=wait)
