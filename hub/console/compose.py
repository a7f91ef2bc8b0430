"""The composer's form, both ways: posted fields -> announcement input, stored announcement -> fields.

Each kind's structured fields (hub.kinds) have plain form fields: texts as ``<name>_id`` and ``<name>_en``
(English optional), lists as one item per line, contacts as ``service = number`` lines, the hours grid as
``hours_<day>``. Errors come back keyed by the data field they concern (``reason``, ``hours``,
``contacts``...), so the page shows each beside its field; nothing is stored while any remain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from hub import kinds
from hub.announcements import AnnouncementInput

Values = dict[str, str | list[str]]


@dataclass(frozen=True)
class Err:
    """One field's error: a text key under ``ann.error.`` and its parameters (shown in the user's language).

    ``detail`` is the hub's English message, shown only when no text exists for the code.
    """

    code: str
    params: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


Errors = dict[str, Err]
WEEK = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: The kinds in the composer's order, and each kind's fields: (data key, form shape).
FIELDS: dict[str, list[tuple[str, str]]] = {
    "hours_changed": [
        ("hours", "week"),
        ("service_hours", "pairs"),
        ("daily_quota", "number"),
        ("contacts", "pairs"),
        ("health_protocol", "lines"),
        ("basis", "line"),
    ],
    "closure": [
        ("reason", "text"),
        ("period_days", "number"),
        ("review_after_days", "number"),
        ("online_app", "line"),
        ("exceptions", "lines"),
    ],
    "restriction": [
        ("reason", "text"),
        ("period_days", "number"),
        ("online_app", "line"),
        ("urgent_in_person", "lines"),
    ],
    "suspension": [
        ("service", "text"),
        ("since", "date"),
        ("until", "date"),
        ("reason", "text"),
        ("alternative", "text"),
    ],
    "online_only": [
        ("via", "line"),
        ("online_app", "line"),
        ("contacts", "pairs"),
        ("online_services", "lines"),
    ],
    "link": [("link_name", "line"), ("url", "line"), ("description", "text")],
    "free_text": [("title", "text"), ("text", "text")],
}
#: Fields every kind has (hub.kinds.Data).
COMMON: list[tuple[str, str]] = [("note", "text"), ("link", "link")]
TIMES = ("valid_from", "valid_until", "publish_at")
#: Where a kind's check of its fields together is shown (no hours at all; until before since).
WHOLE = {"hours_changed": "hours", "suspension": "until"}


def one(values: Values, name: str) -> str:
    value = values.get(name, "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return value.strip()


def many(values: Values, name: str) -> list[str]:
    value = values.get(name, [])
    items = value if isinstance(value, list) else [value]
    return [v.strip() for v in items if v.strip()]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _text(values: Values, key: str) -> Any:
    indonesian, english = one(values, f"{key}_id"), one(values, f"{key}_en")
    if not indonesian and not english:
        return None
    return {"id": indonesian, "en": english} if english else indonesian


def _text_lines(values: Values, key: str, errors: Errors) -> list[Any]:
    indonesian, english = _lines(one(values, f"{key}_id")), _lines(one(values, f"{key}_en"))
    if english and len(english) != len(indonesian):
        errors[key] = Err("en_lines")
        return []
    return [{"id": i, "en": e} for i, e in zip(indonesian, english, strict=True)] if english else indonesian


def _pairs(values: Values, key: str, errors: Errors) -> list[tuple[str, str]]:
    pairs = []
    for line in _lines(one(values, key)):
        left, sep, right = line.rpartition("=")
        if not sep or not left.strip() or not right.strip():
            errors[key] = Err("pairs")
            return []
        pairs.append((left.strip(), right.strip()))
    return pairs


def _service(text: str) -> Any:
    """``KK dan KTP-el | KK and KTP-el``: the Indonesian name, then the English one if given."""
    indonesian, sep, english = text.partition("|")
    return (
        {"id": indonesian.strip(), "en": english.strip()} if sep and english.strip() else indonesian.strip()
    )


def data_from(template: str, values: Values) -> tuple[dict[str, Any], Errors]:
    """The kind's data from the form, and errors (text keys under ``ann.error.``) of the form's shape."""
    errors: Errors = {}
    data: dict[str, Any] = {}
    for key, shape in [*FIELDS.get(template, []), *COMMON]:
        if shape == "text":
            value: Any = _text(values, key)
        elif shape == "lines":
            value = _text_lines(values, key, errors) or None
        elif shape in ("line", "number", "date"):
            value = one(values, key) or None
        elif shape == "week":
            value = {day: one(values, f"hours_{day}") for day in WEEK if one(values, f"hours_{day}")}
        elif shape == "pairs":
            pairs = _pairs(values, key, errors)
            second = "hours" if key == "service_hours" else "number"
            value = [{"service": _service(s), second: v} for s, v in pairs]
        elif shape == "link":
            name, url = one(values, "link_name_common"), one(values, "link_url")
            value = {"name": name, "url": url} if name or url else None
        if value not in (None, "", [], {}) or shape == "week":
            data[key] = value
    return data, errors


def check(template: str, data: dict[str, Any]) -> Errors:
    """Every field hub.kinds refuses, keyed by the data field (the first part of its location).

    Each is the kind's code and parameters (hub.kinds.problem_of); an error inside a list names its row
    (``row``, from 1) so the text can say which line of the field is wrong.
    """
    model = kinds.KINDS.get(template)
    if model is None:
        return {"template": Err("unknown_kind")}
    try:
        model.model_validate(data)
    except ValidationError as exc:
        errors: Errors = {}
        for error in exc.errors():
            loc = list(error["loc"])
            key = str(loc[0]) if loc else WHOLE.get(template, "form")
            code, params = kinds.problem_of(error)
            rows = [p for p in loc[1:] if isinstance(p, int)]
            if rows:
                params["row"] = rows[0] + 1
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.setdefault(key, Err(code, params, message))
        return errors
    return {}


def input_from(values: Values) -> tuple[AnnouncementInput | None, Errors]:
    """The announcement input the form describes, or the errors per field (nothing to store)."""
    template = one(values, "template")
    data, errors = data_from(template, values)
    for key, message in check(template, data).items():
        errors.setdefault(key, message)
    times: dict[str, datetime | None] = {}
    for name in TIMES:
        text = one(values, name)
        try:
            times[name] = datetime.fromisoformat(text) if text else None
        except ValueError:
            errors[name] = Err("bad_time")
    topics, regions = many(values, "topics"), many(values, "regions")
    if not topics and not regions:
        errors["targets"] = Err("no_targets")
    if errors:
        return None, errors
    req = AnnouncementInput(
        template=template,
        data=data,
        topics=topics,
        regions=regions,
        services=many(values, "services"),
        **times,
    )
    return req, {}


#: hub.announcements.prepare's refusals, by their (English, the API's) wording: field and text code.
PREPARE = (
    (re.compile(r"valid-until must be after valid-from"), "valid_until", "until_before_from"),
    (re.compile(r"valid-until is already in the past"), "valid_until", "until_past"),
    (re.compile(r"publish time must be before valid-until"), "publish_at", "publish_after_until"),
    (re.compile(r"unknown topic '(?P<name>[^']*)'"), "targets", "unknown_topic"),
    (re.compile(r"unknown region '(?P<name>[^']*)'"), "targets", "unknown_region"),
    (re.compile(r"no office sits in the given regions"), "targets", "no_office"),
    (
        re.compile(
            r"the (?P<channel>\w+) rendering in '(?P<locale>\w+)' needs (?P<value>\d+) (?P<fact>\w+), "
            r"more than the (?P<limit>\d+) allowed"
        ),
        "form",
        "too_long",
    ),
)


def where(message: str) -> tuple[str, Err]:
    """The field a refusal of hub.announcements.prepare concerns, and its text code (its wording says)."""
    for pattern, key, code in PREPARE:
        found = pattern.search(message)
        if found:
            return key, Err(code, found.groupdict(), message)
    return "form", Err("invalid", {}, message)


def localize(errors: Errors, t: Callable[..., str]) -> dict[str, str]:
    """Each field's error as the user reads it; a code without a text shows the hub's own message."""
    out: dict[str, str] = {}
    for key, err in errors.items():
        params = dict(err.params)
        if "day" in params:  # the form's day keys, or what was typed (senin ... minggu)
            params["day"] = t(f"ann.day.{params['day']}") if params["day"] in WEEK else params["day"]
        name = f"ann.error.{err.code}"
        try:
            text = t(name, **params) if t(name) != name else ""
        except (KeyError, IndexError, ValueError):  # a text naming a parameter this error lacks
            text = ""
        text = text or t("ann.error.invalid", message=err.detail or err.code)
        if "row" in params:
            text = t("ann.error.row", row=params["row"], text=text)
        out[key] = text
    return out


def values_from(
    template: str, data: dict[str, Any], targets: dict[str, Any], times: dict[str, str]
) -> Values:
    """A stored announcement as the form's fields (a draft to edit, or a correction pre-filled)."""
    values: dict[str, Any] = {"template": template, **{k: v or "" for k, v in times.items()}}
    values["topics"] = list(targets.get("topics", []))
    values["regions"] = list(targets.get("regions", []))
    for key, shape in [*FIELDS.get(template, []), *COMMON]:
        value = data.get(key)
        if value in (None, [], {}):
            continue
        if shape == "text":
            values[f"{key}_id"], values[f"{key}_en"] = value.get("id", ""), value.get("en", "")
        elif shape == "lines":
            values[f"{key}_id"] = "\n".join(v.get("id", "") for v in value)
            english = [v.get("en", "") for v in value]
            values[f"{key}_en"] = "\n".join(english) if all(english) else ""
        elif shape == "week":
            values.update({f"hours_{day}": span for day, span in value.items()})
        elif shape == "pairs":
            second = "hours" if key == "service_hours" else "number"
            values[key] = "\n".join(f"{_service_text(v['service'])} = {v[second]}" for v in value)
        elif shape == "link":
            values["link_name_common"], values["link_url"] = value.get("name", ""), value.get("url", "")
        else:
            values[key] = str(value)
    return values


def _service_text(service: dict[str, str]) -> str:
    english = service.get("en")
    return f"{service.get('id', '')} | {english}" if english else service.get("id", "")
