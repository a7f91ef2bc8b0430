"""The status at a moment, as a pure function of the base status, the announcements and the time.

Nothing here reads the store or the clock: ``status_at`` gathers the facts, this lays them over each other.
A structured announcement (``hub.kinds``) shapes the status while ``at`` is inside its window
[start, end): start is its valid-from (or its publish time, if later), end its valid-until; later
publications win. When the window ends the status is the base again: no job has to undo anything.

Dated exceptions of the base (a holiday, other hours one day) are more specific than any weekly hours,
so they decide that day's hours even while an hours announcement is in force; the mode (closed,
restricted, online only) is the announcements' to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from hub.clock import to_local, to_utc
from hub.render import WEEK
from hub.status.effective import ContactView, DayView, Effective, ServiceView, version_of
from hub.status.model import SERVICE_NAMES, Contact, DatedException, OfficeStatusModel

#: Kinds that change the status; ``link`` and ``free_text`` only inform.
SHAPING = ("hours_changed", "closure", "restriction", "suspension", "online_only")
#: From least to most restrictive: a service is never more open than its office.
SEVERITY = ("in_person", "restricted", "online_only", "closed")
EARLIEST = datetime.min
LATEST = datetime.max


@dataclass(frozen=True)
class Fact:
    """One published, uncorrected, uncancelled structured announcement, reduced to what shapes the status."""

    id: int
    template: str
    data: dict[str, Any]
    services: list[str]
    start: datetime | None
    end: datetime | None
    #: Publication order: later wins.
    order: tuple[Any, ...] = field(default=())

    def active(self, at: datetime) -> bool:
        return (self.start or EARLIEST) <= at < (self.end or LATEST)


def local_midnight(day: date, tz: str) -> datetime:
    return to_utc(datetime.combine(day, time()), tz)


def suspension_window(fact: Fact, tz: str) -> Fact:
    """A suspension's own ``since``/``until`` dates (``until`` included) narrow its window."""
    since, until = fact.data.get("since"), fact.data.get("until")
    start, end = fact.start, fact.end
    if since:
        begin = local_midnight(date.fromisoformat(str(since)), tz)
        start = max(start, begin) if start else begin
    if until:
        stop = local_midnight(date.fromisoformat(str(until)) + timedelta(days=1), tz)
        end = min(end, stop) if end else stop
    return Fact(fact.id, fact.template, fact.data, fact.services, start, end, fact.order)


# ---------------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _names(key: str, name: dict[str, str] | None) -> set[str]:
    found = {_norm(key), _norm(key.replace("-", " "))}
    for text in [*(name or {}).values(), *SERVICE_NAMES.get(key, {}).values()]:
        found.add(_norm(text))
        found.update(_norm(m) for m in re.findall(r"\(([^)]+)\)", text))  # "Kartu Keluarga (KK)" -> kk
        found.add(_norm(re.sub(r"\([^)]*\)", "", text)))
    return {n for n in found if n}


class _State:
    """The status being built: plain dicts and lists, changed announcement by announcement."""

    def __init__(self, base: OfficeStatusModel) -> None:
        self.weekly: dict[str, list[str]] = {d: list(s) for d, s in base.hours.items()}
        self.quota = base.quota
        self.mode: str = base.mode
        self.urgent: list[dict[str, str]] = [dict(u) for u in base.urgent]
        self.contacts: list[Contact] = list(base.contacts)
        self.note = dict(base.note) if base.note else None
        self.services: dict[str, dict[str, Any]] = {
            s.key: {
                "key": s.key,
                "name": dict(s.name or {}),
                "mode": s.mode,
                "hours": {d: list(x) for d, x in s.hours.items()} if s.hours is not None else None,
                "quota": s.quota,
                "exceptions": list(s.exceptions),
                "contacts": list(s.contacts),
                "note": dict(s.note) if s.note else None,
                "urgent": [dict(u) for u in s.urgent],
            }
            for s in base.services
        }

    def match(self, text: Any) -> list[str]:
        """The services a text names: ``"KK dan KTP-el"`` -> ``["kk", "ktp-el"]``; none known -> []."""
        values = text.values() if isinstance(text, dict) else [str(text)]
        keys: list[str] = []
        for value in values:
            whole = _norm(value)
            parts = [whole, *(_norm(p) for p in re.split(r",|/|&|\bdan\b|\band\b", value.lower()))]
            for key, svc in self.services.items():
                if key not in keys and _names(key, svc["name"]) & set(parts):
                    keys.append(key)
            for key in SERVICE_NAMES:
                if key not in keys and key not in self.services and _names(key, None) & set(parts):
                    keys.append(key)
        return keys

    def service(self, key: str, name: Any = None) -> dict[str, Any]:
        """The service ``key``, added (named ``name``) when the base does not list it."""
        if key not in self.services:
            label = name if isinstance(name, dict) else ({"id": str(name)} if name else None)
            self.services[key] = {
                "key": key,
                "name": dict(SERVICE_NAMES.get(key) or label or {"id": key}),
                "mode": None,
                "hours": None,
                "quota": None,
                "exceptions": [],
                "contacts": [],
                "note": None,
                "urgent": [],
            }
        return self.services[key]

    def services_named(self, text: Any) -> list[dict[str, Any]]:
        keys = self.match(text) or [_slug(text)]
        return [self.service(k, text) for k in keys]

    def add_contact(self, contact: Contact, about: Any = None) -> None:
        targets = self.services_named(about) if about is not None and self.match(about) else []
        for svc in targets:
            if all(c.value != contact.value for c in svc["contacts"]):
                svc["contacts"].insert(0, contact)
        if not targets and all(c.value != contact.value for c in self.contacts):
            self.contacts.append(contact)


def _loc(text: Any) -> dict[str, str]:
    """A text as stored by ``hub.kinds`` (per language), or a plain string from older data."""
    return dict(text) if isinstance(text, dict) else {"id": str(text)}


def _slug(text: Any) -> str:
    value = text.get("id", "") if isinstance(text, dict) else str(text)
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:64] or "layanan"


def number_contact(number: str, label: str, via: str | None = None) -> Contact:
    """A published number: WhatsApp when the announcement says so or it is a mobile number (08..)."""
    digits = re.sub(r"\D", "", number)
    mobile = digits.startswith("08") or digits.startswith("628")
    if (via and "whatsapp" in via.lower()) or (via is None and mobile):
        international = "62" + digits[1:] if digits.startswith("0") else digits
        return Contact(kind="whatsapp", label=label, value=number, url=f"https://wa.me/{international}")
    return Contact(kind="phone", label=label, value=number, url=f"tel:{digits}" if digits else None)


def app_contact(app: str) -> Contact:
    url = app if re.match(r"^https?://", app) else None
    return Contact(kind="web" if url else "app", label=app if not url else "", value=app, url=url)


def _label(text: Any) -> str:
    return text.get("id", "") if isinstance(text, dict) else str(text or "")


def _apply(state: _State, fact: Fact) -> None:
    """Lay one announcement over the status (``SHAPING`` kinds only)."""
    data, kind = fact.data, fact.template
    scoped = [state.service(k) for k in fact.services] if fact.services else []

    def set_mode(mode: str, urgent: list[Any] | None = None) -> None:
        for target in scoped or [None]:
            if target is None:
                state.mode = mode
                state.urgent = [_loc(u) for u in urgent or []]
            else:
                target["mode"] = mode
                target["urgent"] = [_loc(u) for u in urgent or []]

    if kind == "hours_changed":
        if data.get("hours"):
            week = {d: [s] for d, s in data["hours"].items()}
            for target in scoped or [None]:
                if target is None:
                    state.weekly = week
                else:
                    target["hours"] = week
        open_days = [d for d in WEEK if state.weekly.get(d)] or list(WEEK[:5])
        for item in data.get("service_hours") or []:
            for svc in state.services_named(item["service"]):
                svc["hours"] = {d: [item["hours"]] for d in open_days}
        if data.get("daily_quota") is not None:
            for target in scoped or [None]:
                if target is None:
                    state.quota = data["daily_quota"]
                else:
                    target["quota"] = data["daily_quota"]
        for item in data.get("contacts") or []:
            state.add_contact(number_contact(item["number"], _label(item["service"])), item["service"])
    elif kind == "closure":
        if data.get("exceptions"):
            set_mode("restricted", data["exceptions"])
        else:
            set_mode("online_only" if data.get("online_app") else "closed")
        if data.get("online_app"):
            state.add_contact(app_contact(data["online_app"]))
    elif kind == "restriction":
        set_mode("restricted", data.get("urgent_in_person"))
        if data.get("online_app"):
            state.add_contact(app_contact(data["online_app"]))
    elif kind == "online_only":
        named = [svc for text in data.get("online_services") or [] for svc in state.services_named(text)]
        if named and not scoped:
            for svc in named:
                svc["mode"] = "online_only"
        else:
            set_mode("online_only")
        via = data.get("via") or "WhatsApp"
        for item in data.get("contacts") or []:
            state.add_contact(number_contact(item["number"], _label(item["service"]), via), item["service"])
        if data.get("online_app"):
            state.add_contact(app_contact(data["online_app"]))
    elif kind == "suspension":
        for svc in state.services_named(data["service"]):
            svc["mode"] = "closed"
            note = data.get("alternative") or data.get("reason")
            svc["note"] = _loc(note) if note else svc["note"]


# ---------------------------------------------------------------------------------------------------------


def _day(
    weekly: dict[str, list[str]], quota: int | None, exceptions: list[DatedException], day: date
) -> DayView:
    """A day's hours: the last dated exception covering it, else the week's hours for its weekday."""
    hit = next((e for e in reversed(exceptions) if e.covers(day)), None)
    if hit is None:
        spans = list(weekly.get(WEEK[day.weekday()], []))
        return DayView(open=bool(spans), spans=spans, quota=quota if spans else None, day=day)
    spans = [] if hit.closed else list(hit.hours or weekly.get(WEEK[day.weekday()], []))
    return DayView(
        open=bool(spans),
        spans=spans,
        quota=(hit.quota if hit.quota is not None else quota) if spans else None,
        note=dict(hit.note) if hit.note else None,
        day=day,
        exception=True,
    )


def _exception_dict(exc: DatedException) -> dict[str, Any]:
    return exc.model_dump(mode="json", exclude_defaults=True)


def evaluate(office_id: str, tz: str, base: OfficeStatusModel, facts: list[Fact], at: datetime) -> Effective:
    """The status at ``at`` (naive UTC), without ``since``/``changes_at`` (see ``effective_at``)."""
    state = _State(base)
    active = sorted((f for f in facts if f.active(at)), key=lambda f: f.order)
    for fact in active:
        _apply(state, fact)
    today = to_local(at, tz).date()
    office_exc = [e for e in base.exceptions if e.service is None]
    view = _day(state.weekly, state.quota, office_exc, today)
    if state.mode in ("closed", "online_only"):
        view = DayView(False, view.spans, None, view.note, today, view.exception)
    services = []
    for svc in state.services.values():
        mode = max(svc["mode"] or state.mode, state.mode, key=SEVERITY.index)
        hours = svc["hours"] if svc["hours"] is not None else state.weekly
        quota = svc["quota"] if svc["quota"] is not None else state.quota
        own = [*svc["exceptions"], *(e for e in base.exceptions if e.service == svc["key"])]
        svc_today = _day(hours, quota, [*office_exc, *own], today)
        if mode in ("closed", "online_only"):
            svc_today = DayView(False, svc_today.spans, None, svc_today.note, today, svc_today.exception)
        services.append(
            ServiceView(
                key=svc["key"],
                name=svc["name"],
                mode=mode,
                hours=hours,
                quota=quota,
                exceptions=[_exception_dict(e) for e in own if (e.until or e.date) >= today],
                contacts=[ContactView(c.kind, c.label, c.value, c.url) for c in svc["contacts"]],
                note=svc["note"],
                urgent=svc["urgent"] or (state.urgent if mode == "restricted" else []),
                today=svc_today,
            )
        )
    return Effective(
        office_id=office_id,
        timezone=tz,
        at=at,
        today=view,
        weekly=state.weekly,
        quota=state.quota,
        mode=state.mode,
        urgent=state.urgent,
        services=services,
        contacts=[ContactView(c.kind, c.label, c.value, c.url) for c in state.contacts],
        note=state.note,
        exceptions=[_exception_dict(e) for e in office_exc if (e.until or e.date) >= today],
        in_force=[f.id for f in active if f.template in SHAPING],
        since=at,
        changes_at=None,
    )


def boundaries(base: OfficeStatusModel, facts: list[Fact], tz: str) -> set[datetime]:
    """Every moment the status may change: windows' starts and ends, exceptions' first and next days."""
    found: set[datetime] = set()
    for fact in facts:
        found.update(t for t in (fact.start, fact.end) if t is not None)
    excs = [*base.exceptions, *(e for s in base.services for e in s.exceptions)]
    for exc in excs:
        found.add(local_midnight(exc.date, tz))
        found.add(local_midnight((exc.until or exc.date) + timedelta(days=1), tz))
    return found


def effective_at(
    office_id: str,
    tz: str,
    base: OfficeStatusModel,
    facts: list[Fact],
    at: datetime,
    *,
    base_since: datetime | None = None,
) -> Effective:
    """``evaluate`` plus ``version``, ``changes_at`` (the next boundary, or the next local midnight, since
    "today" changes then) and ``since`` (the last boundary before which the status was different)."""
    facts = [suspension_window(f, tz) if f.template == "suspension" else f for f in facts]
    facts = [f for f in facts if f.template in SHAPING]
    current = evaluate(office_id, tz, base, facts, at)
    version = version_of(current.content())
    local_day = to_local(at, tz).date()
    midnights = {local_midnight(local_day + timedelta(days=n), tz) for n in range(-14, 2)}
    marks = boundaries(base, facts, tz) | midnights
    later = [t for t in marks if t > at]
    changes_at = min(later) if later else None
    since: datetime | None = None
    earlier = sorted((t for t in marks if t <= at), reverse=True)[:40]
    for mark in earlier:
        if base_since is not None and mark <= base_since:
            since = base_since  # the base itself changed then
            break
        before = evaluate(office_id, tz, base, facts, mark - timedelta(microseconds=1))
        if version_of(before.content()) != version:
            since = mark
            break
    if since is None:  # the same as far back as looked
        since = base_since or (earlier[-1] if earlier else at)
    return Effective(
        **{
            **current.__dict__,
            "since": since,
            "changes_at": changes_at,
            "version": version,
        }
    )
