"""A notice's data to HTML (Jinja2, ``templates/``) to PDF (WeasyPrint), with QR codes by segno.

Rendering a PDF takes about half a second of CPU: it runs in a thread, one at a time per process, and
the bytes are kept in a small cache keyed by the notice's version (a hash of everything printed), so a
notice is rendered again only when what it says changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent
Size = Literal["a4", "a5"]
SIZES: tuple[Size, ...] = ("a4", "a5")

#: Rendered PDFs kept per process (a notice is some 30-60 KB).
CACHE_ENTRIES = 64
_cache: OrderedDict[str, bytes] = OrderedDict()
_cache_lock = threading.Lock()
#: WeasyPrint is not documented as thread-safe: one render at a time.
_render_lock = threading.Lock()


@lru_cache(maxsize=1)
def texts() -> dict[str, dict[str, str]]:
    """``texts/notice.<locale>.toml``: what the frame says, per locale."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((HERE / "texts").glob("notice.*.toml")):
        out[path.suffixes[-2].lstrip(".")] = tomllib.loads(path.read_text(encoding="utf-8"))
    return out


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["qr"] = qr_data_uri
    return env


@lru_cache(maxsize=1)
def _format_hash() -> str:
    """A hash of the templates and texts: a changed layout is a new version of every notice."""
    digest = hashlib.sha256()
    for path in sorted([*(HERE / "templates").iterdir(), *(HERE / "texts").iterdir()]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def qr_data_uri(url: str) -> str:
    """An SVG QR code as a data URI; error correction M survives a creased or faded print."""
    return segno.make(url, error="m", micro=False).svg_data_uri(scale=4, border=4)


def version(view: dict[str, Any], size: Size) -> str:
    """Equal for equal notices: the ETag and the cache key."""
    blob = json.dumps(view, sort_keys=True, default=str) + size + _format_hash()
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def render_html(view: dict[str, Any], size: Size) -> str:
    locale = view["locale"]
    words = texts().get(locale) or texts()["id"]
    template = _env().get_template(f"{view['kind']}.html.j2")
    return template.render(**view, size=size, t=_words(words))


def _words(words: dict[str, str]) -> Callable[..., str]:
    def t(key: str, **params: Any) -> str:
        text = words[key]
        return text.format(**params) if params else text

    return t


def _write_pdf(html: str) -> bytes:
    from weasyprint import HTML  # imported on first use: it costs every other command ~0.5 s

    with _render_lock:
        return HTML(string=html, base_url=str(HERE)).write_pdf()


async def pdf(view: dict[str, Any], size: Size) -> tuple[bytes, str]:
    """The PDF of a notice and its version, from the cache when the same notice was rendered before."""
    key = version(view, size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key], key
    data = await asyncio.to_thread(_write_pdf, render_html(view, size))
    with _cache_lock:
        _cache[key] = data
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return data, key
