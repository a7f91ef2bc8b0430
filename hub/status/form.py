"""The console's status form: the base status as form fields, and posted fields back to a status.

The common parts are plain fields (hours per day, quota, mode, urgent cases, note, dated exceptions one per
line); services and contacts, which nest, are JSON text areas prefilled with what is stored. A refusal
(``StatusError``) names the form field to mark, so staff see which box to fix.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub.render import WEEK
from hub.status.model import StatusError

#: One dated exception per line: ``2026-12-25 tutup Hari Natal`` or ``2026-12-24..2026-12-26 08:00-10:00``.
_EXCEPTION = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:\s*\.\.\s*(?P<until>\d{4}-\d{2}-\d{2}))?"
    r"(?:\s+\[(?P<service>[a-z0-9-]+)\])?"
    r"\s+(?P<what>tutup|closed|\d{1,2}[:.]\d{2}\s*-\s*\d{1,2}[:.]\d{2}(?:\s*,\s*\d{1,2}[:.]\d{2}\s*-\s*\d{1,2}[:.]\d{2})*)"
    r"(?:\s+(?P<note>.+))?$",
    re.IGNORECASE,
)
FIELDS = (
    *(f"hours_{d}" for d in WEEK),
    "quota",
    "mode",
    "urgent",
    "note_id",
    "note_en",
    "exceptions",
    "services",
    "contacts",
)


def to_form(status: dict[str, Any]) -> dict[str, str]:
    """The stored status as the form's text values."""
    values = {f"hours_{d}": ", ".join(status.get("hours", {}).get(d, [])) for d in WEEK}
    values["quota"] = "" if status.get("quota") is None else str(status["quota"])
    values["mode"] = status.get("mode", "in_person")
    values["urgent"] = "\n".join(u.get("id", "") for u in status.get("urgent", []))
    note = status.get("note") or {}
    values["note_id"], values["note_en"] = note.get("id", ""), note.get("en", "")
    values["exceptions"] = "\n".join(_exception_line(e) for e in status.get("exceptions", []))
    for name in ("services", "contacts"):
        values[name] = json.dumps(status.get(name, []), ensure_ascii=False, indent=2)
    return values


def _exception_line(exc: dict[str, Any]) -> str:
    when = exc["date"] + (f"..{exc['until']}" if exc.get("until") else "")
    service = f" [{exc['service']}]" if exc.get("service") else ""
    what = "tutup" if exc.get("closed") else ", ".join(exc.get("hours", [])) or "tutup"
    note = (exc.get("note") or {}).get("id", "")
    return f"{when}{service} {what}" + (f" {note}" if note else "")


def from_form(values: dict[str, str], keep: dict[str, Any]) -> dict[str, Any]:
    """The status the posted fields describe; ``keep`` supplies what the form does not show (English
    texts of urgent cases and exception notes it cannot edit stay as they were when the Indonesian is
    unchanged). Raises ``StatusError`` naming the form field."""
    status: dict[str, Any] = {}
    hours = {d: values.get(f"hours_{d}", "").strip() for d in WEEK}
    status["hours"] = {d: v for d, v in hours.items() if v}
    quota = values.get("quota", "").strip()
    if quota:
        if not re.fullmatch(r"-?\d{1,9}", quota):
            raise StatusError("quota: a whole number of people", field="quota", code="int_parsing")
        status["quota"] = int(quota)
    status["mode"] = values.get("mode", "in_person")
    kept = {u.get("id"): u for u in keep.get("urgent", [])}
    urgent = [line.strip() for line in values.get("urgent", "").splitlines() if line.strip()]
    status["urgent"] = [kept.get(u, {"id": u}) for u in urgent]
    note = {k: values.get(f"note_{k}", "").strip() for k in ("id", "en")}
    if note["id"]:
        status["note"] = {k: v for k, v in note.items() if v}
    elif note["en"]:
        raise StatusError("note: write the Indonesian note first", field="note_id", code="text_no_id")
    old = {_exception_line(e): e for e in keep.get("exceptions", [])}
    exceptions = []
    for number, line in enumerate(values.get("exceptions", "").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line in old:
            exceptions.append(old[line])
            continue
        match = _EXCEPTION.match(line)
        if match is None:
            raise StatusError(
                f"exceptions: line {number} must look like 2026-12-25 tutup Hari Natal "
                "or 2026-12-24..2026-12-26 08:00-10:00",
                field="exceptions",
                code="exception_line",
                params={"line": number},
            )
        exc: dict[str, Any] = {"date": match["date"]}
        if match["until"]:
            exc["until"] = match["until"]
        if match["service"]:
            exc["service"] = match["service"]
        if match["what"].lower() in ("tutup", "closed"):
            exc["closed"] = True
        else:
            exc["hours"] = [s.strip() for s in match["what"].split(",")]
        if match["note"]:
            exc["note"] = {"id": match["note"].strip()}
        exceptions.append(exc)
    status["exceptions"] = exceptions
    for name in ("services", "contacts"):
        text = values.get(name, "").strip() or "[]"
        try:
            status[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StatusError(
                f"{name}: not valid JSON: {exc.msg} at line {exc.lineno}",
                field=name,
                code="json",
                params={"line": exc.lineno},
            ) from None
    return status


def form_field(error: StatusError) -> str:
    """The form field a refusal is about: ``hours.monday[0]`` -> ``hours_monday``."""
    where = error.field
    head = re.split(r"[.\[]", where, maxsplit=1)[0]
    if head == "hours":
        day = re.match(r"hours\.(\w+)", where)
        return f"hours_{day[1]}" if day and day[1] in WEEK else "hours_monday"
    if head == "note":
        return "note_id"
    return head if head in FIELDS else where
