"""Rendering: Jinja2's sandbox with strict undefined (DESIGN.md rule 7).

A template lives at ``templates/<group>/<name>/<channel|default>.<locale>.txt.j2`` with blocks
``subject`` and ``body``, and optionally a ``.html.j2`` sibling whose ``body`` block is HTML in the
inline subset every rich channel understands. ``templates/layouts/<channel>.{txt,html}.j2``, when present,
wraps a channel's bodies (the email page and its unsubscribe footer).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_datetime
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    UndefinedError,
    pass_context,
    select_autoescape,
)
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from hub.clock import to_local
from hub.errors import InvalidInput

#: Per-recipient merge field, replaced at send time (it differs for every subscriber).
UNSUBSCRIBE_MARK = "[[unsubscribe_url]]"
CONFIRM_MARK = "[[confirm_url]]"
#: Per-recipient: the name of the topic through which the message reached them (the footer says why).
TOPIC_MARK = "[[topic_name]]"
#: A correction's subject or title starts with this, per locale.
CORRECTION_PREFIX = {"id": "Ralat", "en": "Correction"}

TZ_ABBREVIATION = {
    "Asia/Jakarta": "WIB",
    "Asia/Pontianak": "WIB",
    "Asia/Makassar": "WITA",
    "Asia/Jayapura": "WIT",
}
DAYS = {
    "id": {
        "monday": "Senin",
        "tuesday": "Selasa",
        "wednesday": "Rabu",
        "thursday": "Kamis",
        "friday": "Jumat",
        "saturday": "Sabtu",
        "sunday": "Minggu",
    },
    "en": {
        "monday": "Monday",
        "tuesday": "Tuesday",
        "wednesday": "Wednesday",
        "thursday": "Thursday",
        "friday": "Friday",
        "saturday": "Saturday",
        "sunday": "Sunday",
    },
}


class RenderError(InvalidInput):
    """A template that cannot be rendered; nothing is sent."""


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str | None = None
    subject: str | None = None
    buttons: list[dict[str, str]] = field(default_factory=list)


class Renderer:
    def __init__(self, templates_dir: str | Path) -> None:
        self.root = Path(templates_dir)
        if not self.root.is_dir():
            raise RenderError(f"templates directory {self.root} does not exist")
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(self.root)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            # Not trim_blocks: it also eats the line break after a tag that ends a line of text, which
            # glued "per hari." to "Protokol kesehatan:" and URLs to the next word. A line holding only
            # tags is dropped whole by ``_drop_tag_lines`` instead.
            trim_blocks=False,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            extensions=[_TagLines],
        )
        self.env.filters.update(
            tanggal=_in_context(format_day),
            waktu=_in_context(format_moment),
            jam=_in_context(format_hours),
            hari=pass_context(lambda ctx, key: day_name(key, ctx.get("locale", "id"))),
            zona=zone_name,
            t=pass_context(lambda ctx, value: localized(value, ctx.get("locale", "id"))),
            jadwal=pass_context(_schedule_filter),
        )
        self.env.globals["validity"] = validity

    def names(self, group: str) -> list[str]:
        folder = self.root / group
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def exists(self, group: str, name: str) -> bool:
        return (self.root / group / name).is_dir()

    def render(
        self, group: str, name: str, *, channel: str, locale: str, context: dict[str, Any]
    ) -> Rendered:
        """Render one message for one channel and locale, or raise ``RenderError`` naming the cause."""
        if not self.exists(group, name):
            known = ", ".join(self.names(group)) or "none"
            raise RenderError(f"unknown template {name!r} (known: {known})")
        ctx = {**context, "channel": channel, "locale": locale, "confirm_url": Markup(CONFIRM_MARK)}
        text_template = self._pick(group, name, channel, locale, "txt")
        if text_template is None:
            raise RenderError(f"template {group}/{name} has no text for locale {locale!r}")
        subject = self._block(text_template, "subject", ctx).strip() or None
        text = _tidy(self._block(text_template, "body", ctx))
        html_template = self._pick(group, name, channel, locale, "html")
        body_html = (
            _tidy(self._block(html_template, "body", ctx))
            if html_template
            else html.escape(text, quote=False)
        )
        if context.get("correction"):
            original = subject or (text.splitlines() or [""])[0][:120]
            subject = f"{CORRECTION_PREFIX.get(locale, CORRECTION_PREFIX['id'])}: {original}"
        unsubscribable = context.get("unsubscribable", False)
        layout_ctx = {
            **ctx,
            "subject": subject,
            "unsubscribe_url": Markup(UNSUBSCRIBE_MARK) if unsubscribable else "",
            "subscribed_to": Markup(TOPIC_MARK) if unsubscribable else "",
        }
        text = self._layout(channel, "txt", {**layout_ctx, "body": text}) or text
        page = self._layout(channel, "html", {**layout_ctx, "body": Markup(body_html)})
        buttons = [{**b, "text": localized(b["text"], locale)} for b in context.get("buttons", [])]
        return Rendered(text=text, html=page or body_html, subject=subject, buttons=buttons)

    def _pick(self, group: str, name: str, channel: str, locale: str, fmt: str) -> str | None:
        for base in (channel, "default"):
            candidate = f"{group}/{name}/{base}.{locale}.{fmt}.j2"
            if (self.root / candidate).is_file():
                return candidate
        return None

    def _block(self, template_name: str, block: str, ctx: dict[str, Any]) -> str:
        try:
            template = self.env.get_template(template_name)
            render_block = template.blocks.get(block)
            if render_block is None:
                return "" if block == "subject" else template.render(ctx)
            return "".join(render_block(template.new_context(ctx)))
        except UndefinedError as exc:
            raise RenderError(f"template {template_name}: missing value: {exc.message}") from exc
        except SecurityError as exc:
            raise RenderError(f"template {template_name}: not allowed: {exc}") from exc
        except TemplateSyntaxError as exc:
            raise RenderError(f"template {template_name} line {exc.lineno}: {exc.message}") from exc
        except TemplateNotFound as exc:
            raise RenderError(f"template {exc.name} not found") from exc

    def _layout(self, channel: str, fmt: str, ctx: dict[str, Any]) -> str | None:
        name = f"layouts/{channel}.{fmt}.j2"
        if not (self.root / name).is_file():
            return None
        return self._block(name, "page", ctx).strip()


def _in_context(fn: Any) -> Any:
    """Give a filter the message's locale and the office's zone without the template passing them."""

    @pass_context
    def filter_(ctx: Any, value: Any) -> str:
        return fn(value, ctx.get("locale", "id"), ctx.get("tz", "Asia/Jakarta"))

    return filter_


#: A line that holds nothing but block tags and comments (and the blanks around them).
_TAG_LINE = re.compile(r"^[ \t]*(?:(?:\{%(?:(?!%\}).)*%\}|\{#(?:(?!#\}).)*#\})[ \t]*)+\n", re.MULTILINE)


def _drop_tag_lines(source: str) -> str:
    """Remove the line break of lines that hold only tags, so that structure leaves no blank lines.

    A tag that ends a line of text keeps that line's break: ``...per hari.{% endif %}`` stays a line.
    """
    return _TAG_LINE.sub(lambda m: m.group(0).strip(" \t\n"), source)


class _TagLines(Extension):
    """Jinja2 extension applying ``_drop_tag_lines`` to every template source."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _drop_tag_lines(source)


def _tidy(text: str) -> str:
    """Collapse runs of blank lines left by conditional blocks."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# Filters: Indonesian dates, hours and zones


@pass_context
def validity(ctx: Any) -> str:
    """ "Berlaku 23 Maret 2020 sampai 6 April 2020." from the announcement's valid-from and valid-until."""
    locale, tz = ctx.get("locale", "id"), ctx.get("tz", "Asia/Jakarta")
    start, end = ctx.get("valid_from"), ctx.get("valid_until")
    day = lambda v: format_day(v, locale, tz)  # noqa: E731
    words = {"id": ("Berlaku", "sampai", "mulai"), "en": ("Valid", "until", "from")}.get(
        locale, ("Berlaku", "sampai", "mulai")
    )
    if start and end:
        return (
            f"{words[0]} {day(start)} {words[1]} {day(end)}."
            if locale == "id"
            else f"Valid from {day(start)} until {day(end)}."
        )
    if start:
        return f"{words[0]} {words[2]} {day(start)}."
    if end:
        return f"{words[0]} {words[1]} {day(end)}."
    return ""


def zone_name(tz: str) -> str:
    return TZ_ABBREVIATION.get(tz, tz)


def format_day(value: date | datetime | str | None, locale: str = "id", tz: str = "Asia/Jakarta") -> str:
    """``Senin, 23 Maret 2020``; a datetime is shown in the office's zone."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = to_local(value, tz).date()
    return format_date(value, format="full", locale=_babel_locale(locale))


def format_moment(value: datetime | None, locale: str = "id", tz: str = "Asia/Jakarta") -> str:
    """``Senin, 23 Maret 2020 pukul 08.00 WIB``."""
    if value is None:
        return ""
    local = to_local(value, tz)
    day = format_date(local.date(), format="full", locale=_babel_locale(locale))
    clock = format_datetime(local, "HH.mm" if locale == "id" else "HH:mm", locale=_babel_locale(locale))
    joiner = "pukul" if locale == "id" else "at"
    return f"{day} {joiner} {clock} {zone_name(tz)}"


def format_hours(value: str, locale: str = "id", tz: str = "Asia/Jakarta") -> str:
    """``08:00-11:00`` -> ``08.00–11.00 WIB`` (Indonesian writes hours with a dot)."""
    start, _, end = value.partition("-")
    sep = "." if locale == "id" else ":"
    start, end = start.strip().replace(":", sep), end.strip().replace(":", sep)
    return f"{start}–{end} {zone_name(tz)}" if end else f"{start} {zone_name(tz)}"


def day_name(key: str, locale: str = "id") -> str:
    return DAYS.get(locale, DAYS["id"]).get(key.lower(), key)


#: Days in week order, and the Indonesian names staff may write instead of the English keys.
WEEK = tuple(DAYS["en"])
DAY_KEYS = {**{d: d for d in WEEK}, **{v.lower(): k for k, v in DAYS["id"].items()}}


def schedule(
    hours: dict[str, str], locale: str = "id", tz: str = "Asia/Jakarta", *, plain: bool = False
) -> list[tuple[str, str]]:
    """Rows of (days, hours) in week order; consecutive days with the same hours share one row.

    ``{"monday": "08:00-11:00", ..., "thursday": "08:00-11:00", "friday": "08:00-10:00"}`` gives
    ``[("Senin–Kamis", "08.00–11.00 WIB"), ("Jumat", "08.00–10.00 WIB")]``. ``plain`` is for SMS: a
    hyphen instead of the dash (GSM-7 has no dash) and no zone (the template names it once).
    """
    dash = "-" if plain else "–"
    days = sorted(((WEEK.index(DAY_KEYS[k.lower()]), v) for k, v in hours.items()), key=lambda x: x[0])
    runs: list[list[Any]] = []  # [first index, last index, span]
    for index, span in days:
        if runs and runs[-1][1] == index - 1 and runs[-1][2] == span:
            runs[-1][1] = index
        else:
            runs.append([index, index, span])
    rows = []
    for first, last, span in runs:
        label = day_name(WEEK[first], locale)
        if last != first:
            label += dash + day_name(WEEK[last], locale)
        clock = format_hours(span, locale, tz)
        if plain:
            clock = clock.rsplit(" ", 1)[0].replace("–", "-")
        rows.append((label, clock))
    return rows


@pass_context
def _schedule_filter(ctx: Any, hours: dict[str, str], plain: bool = False) -> list[tuple[str, str]]:
    return schedule(hours, ctx.get("locale", "id"), ctx.get("tz", "Asia/Jakarta"), plain=plain)


def localized(value: Any, locale: str) -> str:
    """The text for ``locale`` of a value given per language (``{"id": ..., "en": ...}``) or as one text.

    Announcements are rendered only in the languages all their texts are given in, so a missing
    language here is a bug, and it is an error rather than Indonesian text in an English message.
    """
    if value is None:
        return ""
    if isinstance(value, dict):
        if locale not in value:
            raise RenderError(f"no {locale!r} text for {next(iter(value.values()), '')!r}")
        return str(value[locale])
    return str(value)


@lru_cache(maxsize=8)
def _babel_locale(locale: str) -> str:
    return {"id": "id_ID", "en": "en_GB"}.get(locale, locale)
