"""Rendering console pages: one sandboxed Jinja2 environment, the texts of both locales, CSRF-checked forms.

Every page goes through ``page`` (the layout, the signed-in user, ``t``, the CSRF token, times in the
office's zone) and every POST handler starts with ``form``, which refuses a missing or stale CSRF token
with a 403 page before anything is read or changed. Responses are never cached and never framed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html as html_lib
import re
import time
import tomllib
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from babel.dates import format_datetime
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import select

from hub.api.deps import unusable_text
from hub.clock import to_local
from hub.console import sessions
from hub.render import zone_name
from hub.store.models import Office

if TYPE_CHECKING:
    from hub.console.auth import Staff

HERE = Path(__file__).resolve().parent
LOCALES = ("id", "en")
LANG_COOKIE = "hub_lang"
#: Office time zones are read again after this many seconds (offices rarely move).
ZONES_TTL = 300.0

#: Sent with every console page: no caching of staff data, no framing, no foreign scripts or styles.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


_STYLE_ATTRIBUTE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_STYLE_ELEMENT = re.compile(r"<style[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)


def allow_frame_styles(response: Response, documents: Iterable[str]) -> Response:
    """Let exactly the inline styles of these HTML documents apply (the email previews' srcdoc frames).

    A srcdoc frame inherits the page's Content-Security-Policy, whose ``style-src 'self'`` drops every
    ``style`` attribute of an email (its look lives there, as mail clients want). Rather than
    ``'unsafe-inline'`` for the whole console, the page's policy lists the hash of each style the
    rendered emails carry (``'unsafe-hashes'`` covers attributes); anything else stays blocked.
    """
    hashes: set[str] = set()
    for document in documents:
        styles = [a or b for a, b in _STYLE_ATTRIBUTE.findall(document)]
        styles = [html_lib.unescape(style) for style in styles] + _STYLE_ELEMENT.findall(document)
        for style in styles:
            digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
            hashes.add(f"'sha256-{digest}'")
    if hashes:
        policy = response.headers.get("Content-Security-Policy", SECURITY_HEADERS["Content-Security-Policy"])
        allowed = " ".join(["'self'", "'unsafe-hashes'", *sorted(hashes)])
        response.headers["Content-Security-Policy"] = policy.replace(
            "style-src 'self'", f"style-src {allowed}"
        )
    return response


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def load_texts(folder: Path = HERE / "texts") -> dict[str, dict[str, str]]:
    """Every ``*.id.toml`` / ``*.en.toml`` merged per locale; a key defined twice is an error."""
    texts: dict[str, dict[str, str]] = {locale: {} for locale in LOCALES}
    for path in sorted(folder.glob("*.toml")):
        locale = path.suffixes[-2].lstrip(".") if len(path.suffixes) >= 2 else ""
        if locale not in texts:
            continue
        for key, value in _flatten(tomllib.loads(path.read_text(encoding="utf-8"))).items():
            if key in texts[locale]:
                raise ValueError(f"{path.name}: text {key!r} is defined twice")
            texts[locale][key] = value
    return texts


TEXTS = load_texts()

ENV = ImmutableSandboxedEnvironment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def translator(locale: str) -> Callable[..., str]:
    """``t("key", **fmt)``: the text in ``locale``, else Indonesian, else the key itself (visibly missing)."""
    own, fallback = TEXTS.get(locale, {}), TEXTS["id"]

    def t(key: str, **fmt: Any) -> str:
        text = own.get(key) or fallback.get(key) or key
        return text.format(**fmt) if fmt else text

    return t


def locale_of(request: Request) -> str:
    """``?lang=en`` (remembered in a cookie), else the cookie, else Bahasa Indonesia."""
    asked = request.query_params.get("lang")
    if asked in LOCALES:
        return asked
    remembered = request.cookies.get(LANG_COOKIE)
    return remembered if remembered in LOCALES else "id"


# -- times in the office's zone ------------------------------------------------------------------------

_zones: dict[int, tuple[float, dict[str, str]]] = {}


async def load_zones(request: Request) -> None:
    """Read every office's time zone (cached a few minutes per hub) for ``local_time``."""
    hub = sessions.hub_of(request)
    cached = _zones.get(id(hub))
    if cached is not None and time.monotonic() - cached[0] < ZONES_TTL:
        return
    async with hub.db.session() as session:
        rows = (await session.execute(select(Office.id, Office.timezone))).all()
    _zones[id(hub)] = (time.monotonic(), {office: zone for office, zone in rows})


def _local_time(request: Request, locale: str) -> Callable[..., str]:
    zones = _zones.get(id(sessions.hub_of(request)), (0.0, {}))[1]

    def local_time(value: datetime | None, office_id: str | None = None) -> str:
        """``4 Des 2026 09.30 WIB``: a naive-UTC time from the store in the office's zone."""
        if value is None:
            return ""
        tz = zones.get(office_id or "", "Asia/Jakarta")
        local = to_local(value, tz)
        pattern = "d MMM y HH.mm" if locale == "id" else "d MMM y HH:mm"
        babel = "id_ID" if locale == "id" else "en_GB"
        return f"{format_datetime(local, pattern, locale=babel)} {zone_name(tz)}"

    return local_time


# -- responses -----------------------------------------------------------------------------------------


def _finish(request: Request, response: Response) -> Response:
    sessions.apply_cookie(request, response)
    asked = request.query_params.get("lang")
    if asked in LOCALES and request.cookies.get(LANG_COOKIE) != asked:
        response.set_cookie(LANG_COOKIE, asked, max_age=365 * 86400, path="/console", samesite="lax")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _switch_url(request: Request, locale: str) -> str:
    other = "en" if locale == "id" else "id"
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*query, ('lang', other)])}"


def page(
    request: Request, template: str, staff: Staff | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``hub/console/templates/<template>`` in the layout for ``staff`` (None: not signed in)."""
    locale = locale_of(request)
    values = {
        "request": request,
        "staff": staff,
        "t": translator(locale),
        "locale": locale,
        "csrf": sessions.csrf_token(request),
        "local_time": _local_time(request, locale),
        "path": request.url.path,
        "switch_url": _switch_url(request, locale),
        "setting_up": getattr(request.state, "console_setup", False),
        **context,
    }
    html = ENV.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    _finish(request, response)
    return response


def redirect(request: Request, url: str) -> RedirectResponse:
    """303 See Other (a POST is followed by a GET), with the session cookie when it changed."""
    response = RedirectResponse(url, status_code=303)
    _finish(request, response)
    return response


def problem(request: Request, staff: Staff | None, status_code: int, what: str) -> HTMLResponse:
    """A clear error page: ``what`` is a text key under ``error.`` (``title`` and ``body``)."""
    return page(request, "error.html.j2", staff, status_code=status_code, what=what)


def not_found(request: Request, staff: Staff | None) -> HTMLResponse:
    """404: also for another office's id, so ids tell nothing about other offices."""
    return problem(request, staff, 404, "not_found")


def forbidden(request: Request, staff: Staff | None) -> HTMLResponse:
    return problem(request, staff, 403, "forbidden")


async def form(request: Request) -> dict[str, str | list[str]]:
    """The posted form, after its CSRF token is checked (bad or missing: a 403 page, nothing changed).

    A field given once is a string, a field given more than once a list. Text no database column can
    hold (NUL, lone surrogates) gets a 400 page. Uploaded files are left to the handler
    (``await request.form()`` gives them again: Starlette caches the parsed form).
    """
    from hub.console.auth import ConsoleExit

    staff = getattr(request.state, "console_staff", None)
    try:
        parsed = await request.form()
    except Exception:  # malformed multipart or urlencoded body
        raise ConsoleExit(problem(request, staff, 400, "bad_form")) from None
    sent = parsed.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(
        hashlib.sha256(sent.encode()).digest(), hashlib.sha256(sessions.csrf_token(request).encode()).digest()
    ):
        raise ConsoleExit(problem(request, staff, 403, "csrf"))
    values: dict[str, str | list[str]] = {}
    for name, value in parsed.multi_items():
        if name == "csrf" or not isinstance(value, str):
            continue
        if unusable_text(name) or unusable_text(value):
            raise ConsoleExit(problem(request, staff, 400, "bad_form"))
        previous = values.get(name)
        if previous is None:
            values[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            values[name] = [previous, value]
    return values


def field(values: dict[str, str | list[str]], name: str) -> str:
    """One field's text, stripped ('' when absent; the first when sent twice)."""
    value = values.get(name, "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return value.strip()
