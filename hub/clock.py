"""Time in one place: naive UTC inside the hub, office time zones at the edges.

A time crosses an edge exactly once: ``to_utc`` when it comes in (a time without an offset is read in
the office's zone), ``to_local`` when it goes out (rendered text, API answers, CLI output). Values read
back from the store are naive UTC; ``as_utc`` marks them so that converting them again changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_utc(value: datetime, default_tz: str = "Asia/Jakarta") -> datetime:
    """A naive UTC datetime; a naive input is read in ``default_tz`` (the office's zone)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(default_tz))
    return value.astimezone(UTC).replace(tzinfo=None)


def as_utc(value: datetime | None) -> datetime | None:
    """A stored (naive UTC) time made aware, so that it cannot be mistaken for office time."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def to_local(value: datetime, tz: str) -> datetime:
    """The office's wall-clock time (aware) of a naive-UTC or aware time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(tz))


def local_iso(value: datetime | None, tz: str) -> str | None:
    """``2020-03-23T08:00:00+07:00``: how the API and the CLI show a stored time."""
    return to_local(value, tz).isoformat() if value is not None else None


def parse_when(text: str) -> datetime:
    """Parse ``2020-03-23``, ``2020-03-23 08:00`` or ISO 8601 with an offset.

    The result is as given (naive without an offset): it is converted once, where the office and so its
    zone are known (``hub.announcements.prepare``).
    """
    text = text.strip()
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1) if " " in text else text)
    except ValueError as exc:
        raise ValueError(
            f"cannot read {text!r} as a date or time (use YYYY-MM-DD, YYYY-MM-DD HH:MM or an ISO 8601 "
            "time with an offset such as 2020-03-23T08:00+08:00)"
        ) from exc
