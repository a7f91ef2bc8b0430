"""Time in one place: naive UTC inside the hub, office time zones at the edges."""

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


def to_local(value: datetime, tz: str) -> datetime:
    return value.replace(tzinfo=UTC).astimezone(ZoneInfo(tz))


def parse_when(text: str, default_tz: str = "Asia/Jakarta") -> datetime:
    """Parse ``2020-03-23``, ``2020-03-23 08:00`` or ISO 8601 with offset; returns an aware UTC time."""
    text = text.strip()
    try:
        value = datetime.fromisoformat(text.replace(" ", "T", 1) if " " in text else text)
    except ValueError as exc:
        raise ValueError(
            f"cannot read {text!r} as a date or time (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from exc
    return to_utc(value, default_tz).replace(tzinfo=UTC)
