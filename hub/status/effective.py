"""The status in force at a moment: what the bots, public pages, feeds and notices show.

Made by ``hub.status.overlay.evaluate`` (pure) and ``hub.status.status_at`` (reads the store). Times are
naive UTC; the words come from ``texts/<locale>.toml`` (Bahasa Indonesia first, English second).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from hub.clock import local_iso
from hub.render import WEEK, day_name, zone_name

DEFAULT_LOCALE = "id"


@lru_cache(maxsize=4)
def words(locale: str) -> dict[str, str]:
    """The status's words for ``locale``; Indonesian fills what another locale lacks."""
    folder = Path(__file__).with_name("texts")
    base = tomllib.loads((folder / f"{DEFAULT_LOCALE}.toml").read_text(encoding="utf-8"))
    own = folder / f"{locale}.toml"
    if locale == DEFAULT_LOCALE or not own.is_file():
        return base
    return {**base, **tomllib.loads(own.read_text(encoding="utf-8"))}


def pick(text: dict[str, str] | str | None, locale: str) -> str:
    """One language of a text given per language; Indonesian when that language is missing."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    return text.get(locale) or text.get(DEFAULT_LOCALE) or next(iter(text.values()), "")


def clock(span: str, locale: str = DEFAULT_LOCALE) -> str:
    """``08:00-11:00`` -> ``08.00–11.00`` (Indonesian writes hours with a dot; as ``hub.render`` does).

    SMS turns the dash into GSM-7's hyphen on the way out.
    """
    start, _, end = span.partition("-")
    sep = "." if locale == "id" else ":"
    return f"{start.replace(':', sep)}–{end.replace(':', sep)}"


def spans_text(spans: list[str], locale: str, tz: str | None = None) -> str:
    """``08.00–11.00 dan 13.00–15.00 WIB``: the zone once, at the end."""
    joined = f" {words(locale)['and']} ".join(clock(s, locale) for s in spans)
    return f"{joined} {zone_name(tz)}" if tz else joined


def week_rows(weekly: dict[str, list[str]], locale: str) -> list[tuple[str, str]]:
    """(days, hours) in week order, consecutive days with the same hours together, no zone:
    ``[("Senin–Kamis", "08.00–11.00"), ("Jumat", "08.00–10.00")]``. Closed days are left out."""
    runs: list[list[Any]] = []  # [first index, last index, spans]
    for index, day in enumerate(WEEK):
        spans = weekly.get(day) or []
        if not spans:
            continue
        if runs and runs[-1][1] == index - 1 and runs[-1][2] == spans:
            runs[-1][1] = index
        else:
            runs.append([index, index, spans])
    rows = []
    for first, last, spans in runs:
        label = day_name(WEEK[first], locale)
        if last != first:
            label += "–" + day_name(WEEK[last], locale)
        rows.append((label, spans_text(spans, locale)))
    return rows


@dataclass(frozen=True)
class ContactView:
    kind: str  # whatsapp | phone | app | web | email
    label: str
    value: str
    url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "value": self.value, "url": self.url}


@dataclass(frozen=True)
class DayView:
    """One day at the office (or for one service): open at all, the hours, the quota, a note."""

    open: bool
    spans: list[str]
    quota: int | None = None
    note: dict[str, str] | None = None
    day: date | None = None
    #: Set by a dated exception (a holiday, other hours that day) rather than the week's hours.
    exception: bool = False

    def as_dict(self, locale: str) -> dict[str, Any]:
        return {
            "open": self.open,
            "spans": list(self.spans),
            "quota": self.quota,
            "note": pick(self.note, locale) or None,
        }


@dataclass(frozen=True)
class ServiceView:
    key: str
    name: dict[str, str]
    mode: str
    hours: dict[str, list[str]]
    quota: int | None
    exceptions: list[dict[str, Any]]
    contacts: list[ContactView]
    note: dict[str, str] | None = None
    urgent: list[dict[str, str]] = field(default_factory=list)
    today: DayView | None = None

    def as_dict(self, locale: str) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": pick(self.name, locale),
            "mode": self.mode,
            "hours": {d: list(s) for d, s in self.hours.items()},
            "quota": self.quota,
            "exceptions": self.exceptions,
            "contacts": [c.as_dict() for c in self.contacts],
            "note": pick(self.note, locale) or None,
            "urgent": [pick(u, locale) for u in self.urgent],
            "today": self.today.as_dict(locale) if self.today else None,
        }


@dataclass(frozen=True)
class Effective:
    """An office's status at ``at``: the base status with the announcements in force laid over it."""

    office_id: str
    timezone: str
    at: datetime
    today: DayView
    weekly: dict[str, list[str]]
    quota: int | None
    mode: str
    urgent: list[dict[str, str]]
    services: list[ServiceView]
    contacts: list[ContactView]
    note: dict[str, str] | None
    exceptions: list[dict[str, Any]]
    in_force: list[int]
    since: datetime
    changes_at: datetime | None
    version: str = ""

    @property
    def zone(self) -> str:
        return zone_name(self.timezone)

    def service(self, key: str) -> ServiceView | None:
        return next((s for s in self.services if s.key == key), None)

    def today_line(self, locale: str = DEFAULT_LOCALE) -> str:
        """``Hari ini: buka 08.00-11.00 WIB, kuota 50 orang`` (what one glance should tell)."""
        return f"{words(locale)['today']}: {self.today_state(locale)}"

    def today_state(self, locale: str = DEFAULT_LOCALE) -> str:
        """The line without its ``Hari ini:``: ``buka 08.00-11.00 WIB, kuota 50 orang``."""
        w, day = words(locale), self.today
        note = f" ({pick(day.note, locale)})" if day.note else ""
        hours = spans_text(day.spans, locale, self.timezone)
        if self.mode == "closed":
            return w["closed"] + note
        if self.mode == "online_only":
            return (w["online_hours"].format(hours=hours) if day.spans else w["online_only"]) + note
        if not day.spans:
            known = self.weekly or day.exception or day.note
            return w["closed"] + note if known else w["unknown"]
        parts = [w["open"].format(hours=hours)]
        if self.mode == "restricted":
            parts.append(w["urgent_only"])
        if day.quota is not None:
            parts.append(w["quota"].format(n=day.quota))
        return ", ".join(parts) + note

    def content(self) -> dict[str, Any]:
        """Everything the status says, language-neutral, without the moment: what ``version`` hashes."""
        return {
            "office_id": self.office_id,
            "timezone": self.timezone,
            "today": {**self.today.as_dict(DEFAULT_LOCALE), "note": self.today.note},
            "weekly": self.weekly,
            "quota": self.quota,
            "mode": self.mode,
            "urgent": self.urgent,
            "services": [
                {**s.as_dict(DEFAULT_LOCALE), "name": s.name, "note": s.note, "urgent": s.urgent}
                for s in self.services
            ],
            "contacts": [c.as_dict() for c in self.contacts],
            "note": self.note,
            "exceptions": self.exceptions,
            "in_force": self.in_force,
        }

    def as_dict(self, locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
        """JSON-able, in one language, times in the office's zone with their offset (API, JSON feed)."""
        return {
            "office": self.office_id,
            "timezone": self.timezone,
            "zone": self.zone,
            "at": local_iso(self.at, self.timezone),
            "today_line": self.today_line(locale),
            "today": self.today.as_dict(locale),
            "weekly": {d: list(self.weekly[d]) for d in WEEK if d in self.weekly},
            "quota": self.quota,
            "mode": self.mode,
            "urgent": [pick(u, locale) for u in self.urgent],
            "services": [s.as_dict(locale) for s in self.services],
            "contacts": [c.as_dict() for c in self.contacts],
            "note": pick(self.note, locale) or None,
            "exceptions": self.exceptions,
            "in_force": list(self.in_force),
            "since": local_iso(self.since, self.timezone),
            "changes_at": local_iso(self.changes_at, self.timezone),
            "version": self.version,
        }


def version_of(content: dict[str, Any]) -> str:
    """A short, stable hash of the content (same status, same version, in every process)."""
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
