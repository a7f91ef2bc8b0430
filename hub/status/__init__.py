"""Each office's status as the source of truth: its base (hours, quota, mode, services, contacts) set by
staff, overlaid by the structured announcements in force at the moment asked (issue 11).

    from hub.status import status_at, Effective
    eff = await status_at(session, office, hub.clock.utcnow())
    eff.today_line("id")  # "Hari ini: buka 08.00-11.00 WIB, kuota 50 orang"
"""

from __future__ import annotations

from hub.status.effective import ContactView, DayView, Effective, ServiceView
from hub.status.model import SERVICE_NAMES, OfficeStatusModel, StatusError, validate_status
from hub.status.store import base_of, changed_fields, history, set_status, status_at

__all__ = [
    "SERVICE_NAMES",
    "ContactView",
    "DayView",
    "Effective",
    "OfficeStatusModel",
    "ServiceView",
    "StatusError",
    "base_of",
    "changed_fields",
    "history",
    "set_status",
    "status_at",
    "validate_status",
]
