"""One base for every error a user can cause or fix: the CLI and the API catch ``HubError`` alone.

Each kind carries what the edges need: the HTTP status the API answers and the exit code the CLI ends
with. The message is the whole explanation, written for the person who typed the request (it names the
field, row or setting that is wrong), and never holds a full address, token or secret.
"""

from __future__ import annotations

from typing import ClassVar


class HubError(Exception):
    """Something the caller can fix or retry; ``str(error)`` says what and how."""

    status: ClassVar[int] = 422
    exit_code: ClassVar[int] = 1
    #: Seconds after which a retry may succeed (sent as ``Retry-After`` when set).
    retry_after: int | None = None


class InvalidInput(HubError, ValueError):
    """Input that cannot be used as given (a bad field, row, template value or setting)."""


class NotFound(HubError, LookupError):
    """The thing asked for does not exist (or is outside the caller's scope)."""

    status = 404


class Conflict(HubError):
    """The request clashes with the current state (a case that already exists, a request in progress)."""

    status = 409


class Unavailable(HubError):
    """A service the hub needs (database, Redis) does not answer; trying again later may work."""

    status = 503
    exit_code = 3

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
