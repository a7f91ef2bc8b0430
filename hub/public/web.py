"""Rendering public pages: one sandboxed Jinja2 environment, texts per locale, one inline stylesheet.

The language comes from the URL alone (``?lang=en``; Bahasa Indonesia without it), never from a cookie
or ``Accept-Language``: a URL then names exactly one document, which the cache (``hub.public.cache``)
and any shared cache in front of the hub may keep. The stylesheet is inlined (one request on a slow
link) and allowed by its hash in the Content-Security-Policy; no page runs a script.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from hub.console.web import load_texts

HERE = Path(__file__).resolve().parent
LOCALES = ("id", "en")

TEXTS = load_texts(HERE / "texts")
#: The stylesheet every page carries inline; its hash is the only style the policy allows.
CSS = (HERE / "templates" / "style.css.j2").read_text(encoding="utf-8").strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode()

#: Sent with every public page: no scripts at all, no framing, forms only to the hub itself.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        f"default-src 'none'; img-src 'self'; style-src 'sha256-{_CSS_HASH}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

ENV = ImmutableSandboxedEnvironment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def locale_of(request: Request) -> str:
    asked = request.query_params.get("lang")
    return asked if asked in LOCALES else "id"


def translator(locale: str) -> Callable[..., str]:
    """``t("key", **fmt)``: the text in ``locale``, else Indonesian, else the key itself (visibly missing)."""
    own, fallback = TEXTS.get(locale, {}), TEXTS["id"]

    def t(key: str, **fmt: Any) -> str:
        text = own.get(key) or fallback.get(key) or key
        return text.format(**fmt) if fmt else text

    return t


def link(path: str, locale: str, **query: str) -> str:
    """A link within the public pages that keeps the reader's language."""
    params = {**query, **({"lang": locale} if locale != "id" else {})}
    return f"{path}?{urlencode(params)}" if params else path


def render(template: str, *, locale: str, path: str, **context: Any) -> bytes:
    """A whole page in ``locale``; ``path`` is the page's own address (for the language switch)."""
    other = "en" if locale == "id" else "id"
    values = {
        "t": translator(locale),
        "locale": locale,
        "other_locale": other,
        "switch_url": link(path, other),
        "link": lambda p, **q: link(p, locale, **q),
        "css": Markup(CSS),
        **context,
    }
    return ENV.get_template(template).render(values).encode("utf-8")
