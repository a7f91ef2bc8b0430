"""A base status from what an offices file (``data/offices.toml``) records about an office.

Used for offices nobody has set a status for yet, and written by ``hub init --sample``. Only lasting facts
become the base: day hours and the daily quota of an ``hours_changed`` entry, the published service
numbers and app, a move ``online_only`` "for good", a service suspended until further notice. Changes
reported for a few weeks (visits restricted for 14 days, counters closed for a week) are what
announcements are for, so they stay out of the base.
"""

from __future__ import annotations

from typing import Any

from hub.render import DAY_KEYS
from hub.status.model import dump, validate_status
from hub.status.overlay import app_contact, number_contact

#: Services every office is assumed to offer (the topics ``hub.regions`` makes).
OFFERED = ("ktp-el", "kk", "kia", "akta", "pindah-datang")
#: Words of the offices file's contact labels, and the services they name.
LABEL_SERVICES = {"ktp": "ktp-el", "kk": "kk", "kia": "kia", "akta": "akta", "pindah": "pindah-datang"}


def from_profile(profile: dict[str, Any] | None) -> dict[str, Any]:
    """The base status (as stored) an office's profile implies."""
    profile = profile or {}
    services: dict[str, dict[str, Any]] = {key: {"key": key} for key in OFFERED}
    status: dict[str, Any] = {"contacts": []}
    for label, number in (profile.get("contacts") or {}).items():
        contact = number_contact(str(number), str(label)).model_dump(exclude_none=True)
        named = [key for word, key in LABEL_SERVICES.items() if word in str(label).lower()]
        for key in named:
            services[key].setdefault("contacts", []).append(contact)
        if not named:
            status["contacts"].append(contact)
    if profile.get("online_app"):
        status["contacts"].append(app_contact(profile["online_app"]).model_dump(exclude_none=True))
    for change in profile.get("changes") or []:
        kind = change.get("kind")
        if kind == "hours_changed":
            days = {k: v for k, v in (change.get("hours") or {}).items() if k.lower() in DAY_KEYS}
            if days:
                status["hours"] = days
            if change.get("daily_quota") is not None:
                status["quota"] = change["daily_quota"]
        elif kind == "online_only":
            status["mode"] = "online_only"
        elif kind == "service_suspended" and change.get("service"):
            name = str(change["service"])
            key = "jemput-bola" if "jemput" in name.lower() else None
            if key:
                services[key] = {"key": key, "name": {"id": name}, "mode": "closed"}
    status["services"] = list(services.values())
    return dump(validate_status(status))
