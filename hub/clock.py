"""Time in one place: naive UTC inside the hub, office time zones at the edges.

A time crosses an edge exactly once: ``to_utc`` when it comes in (a time without an offset is read in
the office's zone), ``to_local`` when it goes out (rendered text, API answers, CLI output). Values read
back from the store are naive UTC; ``as_utc`` marks them so that converting them again changes nothing.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

#: A rehearsal clock (tests, drills): a file holding an ISO 8601 time. Every ``hub`` process started with
#: ``HUB_CLOCK_FILE`` set reads the hub's time as that time plus what has passed since the file was
#: written, so a test moves all its processes past a valid-from or valid-until by rewriting one file
#: instead of waiting. Unset (production): the system clock, untouched.
CLOCK_FILE = os.environ.get("HUB_CLOCK_FILE") or None
_shift: tuple[tuple[int, int], timedelta] | None = None


def utcnow() -> datetime:
    now = datetime.now(UTC).replace(tzinfo=None)
    return now + _rehearsal_shift() if CLOCK_FILE else now


def _rehearsal_shift() -> timedelta:
    """How far the rehearsal clock is from the system clock; read again only when the file changes."""
    global _shift
    try:
        stat = os.stat(CLOCK_FILE)  # type: ignore[arg-type]
    except FileNotFoundError:
        return timedelta(0)
    version = (stat.st_mtime_ns, stat.st_size)
    if _shift is None or _shift[0] != version:
        with open(CLOCK_FILE, encoding="utf-8") as file:  # type: ignore[arg-type]
            text = file.read().strip()
        written = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC).replace(tzinfo=None)
        _shift = (version, to_utc(datetime.fromisoformat(text), "UTC") - written if text else timedelta(0))
    return _shift[1]


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
