"""Signed, stateless tokens for links (confirm, unsubscribe): nothing to store, nothing to guess.

A token is ``<values>.t<issued>.<mac>``: the values (ids) in decimal, the issue time in milliseconds since
1970 UTC in base 36 after a ``t``, and 16 bytes of HMAC-SHA256 over the purpose, the values and the time,
in URL-safe base 64. About 45 characters, all of them ``[A-Za-z0-9._-]``.

The time lets a link expire and lets the caller refuse a link made before the citizen changed their mind
(``hub.subscriptions``). Tokens made before links carried a time (``<values>.<mac>``) still verify, with
``Signed.issued_at`` None: each caller decides whether an undated token is still good (unsubscribe: yes,
a citizen must always be able to leave; confirm: no).

The time is read through ``hub.clock`` at call time, so a test can move the clock for this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hub import clock

#: Longest token read at all: real ones are under 80 characters.
MAX_TOKEN_LENGTH = 200
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
_ISSUED = re.compile(r"t[0-9a-z]{1,9}")  # up to the year 5000
_EPOCH = datetime(1970, 1, 1)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class BadToken(ValueError):
    """A link token that was altered, truncated or made for another purpose."""


class Expired(BadToken):
    """A genuine token, older than the caller accepts for its purpose."""

    def __init__(self, issued_at: datetime) -> None:
        super().__init__("token expired")
        self.issued_at = issued_at


@dataclass(frozen=True, slots=True)
class Signed:
    """What a genuine token says: its values, and when it was made (None: made before tokens had a time)."""

    values: list[str]
    issued_at: datetime | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(key: bytes, purpose: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()[:16])


def _millis(when: datetime) -> int:
    """Milliseconds since 1970 of a naive-UTC (the store's) or aware time."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return (when - _EPOCH) // timedelta(milliseconds=1)


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _DIGITS[rest] + digits
        if number == 0:
            return digits


def sign(key: bytes, purpose: str, *values: int | str, issued_at: datetime | None = None) -> str:
    """A token for ``values`` (no value may contain a dot), dated now unless ``issued_at`` says otherwise."""
    if any("." in str(v) for v in values):
        raise ValueError("token values may not contain '.'")
    when = issued_at if issued_at is not None else clock.utcnow()
    payload = ".".join([*(str(v) for v in values), "t" + _base36(_millis(when))])
    return f"{payload}.{_mac(key, purpose, payload)}"


def read(
    key: bytes, purpose: str, token: str, *, max_age: timedelta | None, now: datetime | None = None
) -> Signed:
    """The values and issue time of a genuine token; ``Expired`` if it is dated and older than ``max_age``.

    Raises ``BadToken`` for anything not made with ``key`` for ``purpose``, including text that is not
    a token at all (non-ASCII, too long). ``now`` defaults to the hub's clock (naive UTC).
    """
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise BadToken("malformed token")
    payload, _, mac = token.rpartition(".")
    if not payload or not mac:
        raise BadToken("malformed token")
    if not hmac.compare_digest(_mac(key, purpose, payload), mac):
        raise BadToken("token does not match")
    fields = payload.split(".")
    if not _ISSUED.fullmatch(fields[-1]):
        return Signed(fields, None)
    issued_at = _EPOCH + timedelta(milliseconds=int(fields[-1][1:], 36))
    if max_age is not None and (now if now is not None else clock.utcnow()) - issued_at > max_age:
        raise Expired(issued_at)
    return Signed(fields[:-1], issued_at)


def verify(key: bytes, purpose: str, token: str, *, max_age: timedelta | None = None) -> list[str]:
    """The values of a genuine token, dated or not (see ``read`` for the time and expiry)."""
    return read(key, purpose, token, max_age=max_age).values


def digest(key: bytes, secret: str) -> str:
    """A keyed hash for short secrets (PINs, API keys): useless without the deployment's key."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()
