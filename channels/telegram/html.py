"""Telegram HTML: tokenised once, split on visible-text boundaries, tags re-balanced per part.

Telegram caps a message at 4096 characters after entity parsing, counted in UTF-16 code units; longer
texts go out as numbered parts "(1/3) ", each valid HTML on its own.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache

from channels.base import (
    Content,
)

MAX_MESSAGE_LENGTH = 4096
#: Room kept in every part of a split text for its "(12/34) " number.
_PART_NUMBER_RESERVE = 12


def _utf16_len(text: str) -> int:
    """Telegram counts text in UTF-16 code units (an emoji outside the BMP counts as two)."""
    return len(text.encode("utf-16-le")) // 2


_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?>")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]»]*\s")


@dataclass(frozen=True, slots=True)
class _Unit:
    """One indivisible piece of Telegram HTML: a tag, an entity, or one character."""

    raw: str
    text: str = ""
    tag: str = ""
    closing: bool = False


def _tokenize(source: str) -> list[_Unit]:
    """Split HTML into units; a stray ``<`` or ``&`` is escaped so Telegram cannot choke on it."""
    units: list[_Unit] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "<":
            m = _TAG.match(source, i)
            if m:
                units.append(_Unit(m.group(0), tag=m.group(1).lower(), closing=m.group(0).startswith("</")))
                i = m.end()
                continue
            units.append(_Unit("&lt;", text="<"))
        elif ch == "&":
            m = _ENTITY.match(source, i)
            if m:
                units.append(_Unit(m.group(0), text=html.unescape(m.group(0))))
                i = m.end()
                continue
            units.append(_Unit("&amp;", text="&"))
        elif ch == ">":
            units.append(_Unit("&gt;", text=">"))
        else:
            units.append(_Unit(ch, text=ch))
        i += 1
    return units


def _is_space(unit: _Unit) -> bool:
    return bool(unit.text) and unit.text.isspace()


def _choose_cut(units: list[_Unit], start: int, end: int) -> int:
    """Where the next part starts: the last paragraph, else sentence, else word break before ``end``."""
    chars: list[str] = []
    owner: list[int] = []
    for k in range(start, end):
        for ch in units[k].text:
            chars.append(ch)
            owner.append(k)
    visible = "".join(chars)
    # A paragraph or sentence break only counts if it keeps the part reasonably full.
    min_pos = max(1, len(visible) // 3)
    p = visible.rfind("\n\n")
    if p >= min_pos:
        return owner[p]
    last_sentence = None
    for m in _SENTENCE_END.finditer(visible):
        last_sentence = m
    if last_sentence is not None and last_sentence.end() - 1 >= min_pos:
        return owner[last_sentence.end() - 1]
    for p in range(len(visible) - 1, 0, -1):
        if visible[p].isspace():
            return owner[p]
    return end


def _split_ranges(units: list[_Unit], budget: int) -> list[tuple[int, int]]:
    """Unit ranges whose visible text each fits ``budget`` UTF-16 units."""
    widths = [_utf16_len(u.text) for u in units]
    ranges: list[tuple[int, int]] = []
    n = len(units)
    start = 0
    while start < n and _is_space(units[start]):
        start += 1
    while start < n:
        acc, end = 0, start
        while end < n and acc + widths[end] <= budget:
            acc += widths[end]
            end += 1
        if end >= n:
            while n > start and _is_space(units[n - 1]):
                n -= 1
            ranges.append((start, n))
            break
        cut = _choose_cut(units, start, end)
        stop = cut
        while stop > start and _is_space(units[stop - 1]):
            stop -= 1
        if stop <= start:  # nothing but spaces before the break: cut hard instead
            cut = stop = max(end, start + 1)
        ranges.append((start, stop))
        start = cut
        while start < n and _is_space(units[start]):
            start += 1
    return [(s, e) for s, e in ranges if any(u.text.strip() for u in units[s:e])]


def _render(units: list[_Unit], ranges: list[tuple[int, int]]) -> list[str]:
    """Render each range as valid HTML: tags open at a cut are closed and re-opened in the next part."""
    stack: list[_Unit] = []
    parts: list[str] = []

    def apply(unit: _Unit, out: list[str] | None) -> None:
        if not unit.closing:
            stack.append(unit)
            if out is not None:
                out.append(unit.raw)
            return
        idx = next((k for k in range(len(stack) - 1, -1, -1) if stack[k].tag == unit.tag), None)
        if idx is None:
            return  # a stray end tag would make Telegram reject the message: drop it
        if out is not None:
            out.extend(f"</{inner.tag}>" for inner in reversed(stack[idx + 1 :]))
            out.append(unit.raw)
        del stack[idx:]

    pos = 0
    for start, end in ranges:
        for unit in units[pos:start]:  # skipped spaces between parts; tags there still count
            if unit.tag:
                apply(unit, None)
        out = [u.raw for u in stack]
        for unit in units[start:end]:
            if unit.tag:
                apply(unit, out)
            else:
                out.append(unit.raw)
        out.extend(f"</{u.tag}>" for u in reversed(stack))
        parts.append("".join(out))
        pos = end
    return parts


def split_html(source: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Split Telegram HTML into messages of at most ``limit`` visible characters, numbered "(1/3) "."""
    return list(_split_cached(source, limit))


@lru_cache(maxsize=256)
def _split_cached(source: str, limit: int) -> tuple[str, ...]:
    """A broadcast hands every recipient the same text: tokenise it once per process, not per chat."""
    units = _tokenize(source)
    if sum(_utf16_len(u.text) for u in units) <= limit:
        return tuple(_render(units, [(0, len(units))]))
    parts = _render(units, _split_ranges(units, limit - _PART_NUMBER_RESERVE))
    total = len(parts)
    return tuple(f"({i}/{total}) {part}" for i, part in enumerate(parts, start=1))


def content_html(content: Content) -> str:
    """The HTML to send: the hub's HTML, or the plain text escaped."""
    return content.html if content.html is not None else html.escape(content.text, quote=False)


def visible_text(source: str) -> str:
    """The text Telegram shows for ``source`` (tags removed, entities decoded)."""
    return "".join(u.text for u in _tokenize(source))
