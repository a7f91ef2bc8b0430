"""Signed, stateless tokens for links (confirm, unsubscribe): nothing to store, nothing to guess."""

from __future__ import annotations

import base64
import hashlib
import hmac


class BadToken(ValueError):
    """A link token that was altered, truncated or made for another purpose."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(key: bytes, purpose: str, *values: int | str) -> str:
    payload = ".".join(str(v) for v in values)
    mac = hmac.new(key, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()[:16]
    return f"{payload}.{_b64(mac)}"


def verify(key: bytes, purpose: str, token: str) -> list[str]:
    payload, _, mac = token.rpartition(".")
    if not payload or not mac:
        raise BadToken("malformed token")
    expected = sign(key, purpose, payload).rpartition(".")[2]
    if not hmac.compare_digest(expected, mac):
        raise BadToken("token does not match")
    return payload.split(".")


def digest(key: bytes, secret: str) -> str:
    """A keyed hash for short secrets (PINs, API keys): useless without the deployment's key."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()
