"""Meta's Graph API errors mapped onto the hub's outcomes (DESIGN.md rule 6).

Meta asks for handling by ``code`` (and ``error_data.details``), not by message, whose titles will go
(https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/).
The throttle set is the one RapidPro's Courier uses against the same API
(https://github.com/nyaruka/courier/tree/main/handlers/meta).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from channels.base import Outcome, RecipientGone, Rejected, RetryLater

#: 130429 throughput reached; 131056 pair rate (one business number → one user); 131048 spam rate
#: (quality); 4 and 80007 application/account rate limits; 133016 registration rate limit.
THROUGHPUT = 130429
PAIR_RATE = 131056
RATE_LIMIT_CODES = frozenset({4, 80007, THROUGHPUT, PAIR_RATE, 131048, 133016})
#: "Try again" in Meta's table: API unknown / service (1, 2), something went wrong (131000), service
#: unavailable (131016), send failed (131053).
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 131053})
#: Free-form message outside the 24 h customer-service window: send the template instead.
REENGAGEMENT = 131047
#: Undeliverable: not a WhatsApp user, or a user who cannot receive it. Meta gives no code of its own
#: for "not on WhatsApp"; this is the cue to try another channel.
UNDELIVERABLE = 131026
#: An access token expired, revoked or without the permission (190), or an authentication failure (0).
AUTH_CODES = frozenset({0, 190})


@dataclass(frozen=True, slots=True)
class MetaError:
    """One error answer of the Graph API, as much of it as arrived."""

    status: int
    code: int | None = None
    message: str = ""
    details: str = ""
    retry_after: float | None = None

    @classmethod
    def from_response(cls, status: int, body: bytes, headers: Mapping[str, str]) -> MetaError:
        """Read ``{"error": {"message", "type", "code", "error_data": {"details"}}}``, whatever arrived."""
        retry_after = _seconds(headers.get("retry-after") or headers.get("Retry-After"))
        try:
            error = json.loads(body or b"{}").get("error")
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, dict):
            return cls(status, retry_after=retry_after)
        code = error.get("code")
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        return cls(
            status,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            message=str(error.get("message") or "")[:300],
            details=str(details or "")[:300],
            retry_after=retry_after,
        )

    @property
    def reason(self) -> str:
        """A line for staff: the code, Meta's message and its details (no number is ever in them)."""
        what = (
            f"WhatsApp error {self.code}"
            if self.code is not None
            else f"WhatsApp answered HTTP {self.status}"
        )
        text = self.message or "no message"
        if self.details and self.details not in text:
            text = f"{text} ({self.details})"
        return f"{what}: {text}"

    @property
    def is_rate_limit(self) -> bool:
        return self.code in RATE_LIMIT_CODES or (self.code is None and self.status == 429)

    @property
    def is_transient(self) -> bool:
        return self.code in TRANSIENT_CODES or (self.code is None and self.status >= 500)

    @property
    def is_auth(self) -> bool:
        return self.code in AUTH_CODES or (self.code is None and self.status == 401)


def classify(error: MetaError, *, fallback: str | None = None, backoff: float | None = None) -> Outcome:
    """The outcome of a send Meta refused.

    Rate limits and Meta's own trouble retry without spending an attempt, after the provider's
    Retry-After when it gave one, else ``backoff``; an undeliverable number is gone and, with a
    ``fallback`` channel, tried there once; a refused token is the operator's to fix, not the citizen's
    (retried, and logged by the channel); the rest is rejected with Meta's reason.
    """
    if error.is_rate_limit:
        delay = error.retry_after if error.retry_after is not None else backoff
        return RetryLater(error.reason, delay=delay, provider=True)
    if error.is_transient:
        return RetryLater(error.reason, delay=error.retry_after, provider=True)
    if error.is_auth:
        return RetryLater(f"access token refused: {error.reason}", delay=error.retry_after, provider=True)
    if error.code == UNDELIVERABLE:
        return RecipientGone(error.reason, fallback=fallback)
    return Rejected(error.reason)


def _seconds(value: str | None) -> float | None:
    """A Retry-After in seconds; an HTTP date (which the Graph API does not send) counts as none."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
