"""Homeserver errors mapped onto the hub's outcomes (DESIGN.md rule 6)."""

from __future__ import annotations

import asyncio

import aiohttp
from nio import (
    ErrorResponse,
)

from channels.base import (
    Outcome,
    RecipientGone,
    Rejected,
    RetryLater,
)

_GONE_CODES = {"M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN_ROOM"}
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError)


class DeviceBusy(RuntimeError):
    """Another process owns this bot's device (and its crypto store): this one must not use it."""


def outcome_for_error(resp: ErrorResponse, *, action: str = "send") -> Outcome:
    """Map a homeserver error to one of the hub's outcomes (DESIGN rule 6)."""
    code = resp.status_code or ""
    http_status = getattr(getattr(resp, "transport_response", None), "status", None)
    reason = f"{action}: {code or http_status or 'error'} {resp.message}".strip()
    if code == "M_LIMIT_EXCEEDED" or http_status == 429:
        return RetryLater(reason, retry_after_seconds(resp), provider=True)
    if code in _GONE_CODES:
        return RecipientGone(reason)
    if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
        # The bot's credentials are wrong: not the recipient's fault, and fixable by an operator.
        return RetryLater(reason, 300.0, provider=True)
    if not code or (http_status is not None and http_status >= 500):
        return RetryLater(reason, None, provider=True)
    return Rejected(reason)


def retry_after_seconds(resp: ErrorResponse) -> float | None:
    """``retry_after_ms`` from the body, else the ``Retry-After`` header (spec 1.10+), else None."""
    if resp.retry_after_ms:
        return resp.retry_after_ms / 1000
    headers = getattr(getattr(resp, "transport_response", None), "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
