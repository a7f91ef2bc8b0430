"""SMS encoding and segment counting, so that staff see the cost of a message before it is sent.

One non-GSM character (a curly quote pasted from a word processor) switches the whole message to UCS-2
and more than halves the characters per SMS; the optional transliteration undoes exactly that case.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

#: GSM 03.38 default alphabet (one septet each). ESC (0x1B) is left out: it is not a character.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Extension table: each costs two septets (ESC + the character).
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

# Characters word processors and phones put in text that have a plain GSM-7 equivalent.
_TRANSLITERATION_GROUPS: dict[str, str] = {
    "'": "\u2018\u2019\u201a\u201b\u2032\u00b4`",  # curly and prime quotes, acute accent, backtick
    '"': "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb",  # curly double quotes, guillemets
    "-": "\u2010\u2011\u2012\u2013\u2014\u2015\u2212",  # hyphens, en/em dashes, minus
    "...": "\u2026",  # ellipsis
    " ": "\u00a0\u2002\u2003\u2007\u2009\u200a\u202f\t",  # no-break, en/em, figure, thin spaces; tab
    "": "\u200b\ufeff",  # zero-width space, BOM
}
# Letters without a decomposition to a GSM letter; "ç": GSM 03.38 has Ç (0x09), phones show either case.
_LETTERS = {"ç": "Ç", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i", "œ": "oe", "Œ": "OE"}
_TRANSLITERATIONS: dict[str, str] = {
    ch: plain for plain, chars in _TRANSLITERATION_GROUPS.items() for ch in chars
} | _LETTERS


class TooManySegments(ValueError):
    """A text that would need more SMS segments than the configured maximum."""


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How a text goes over the air: its encoding, segment count, characters and encoding units."""

    encoding: Encoding
    segments: int
    characters: int
    #: Septets for GSM-7, UTF-16 code units for UCS-2.
    units: int


def is_gsm7(text: str) -> bool:
    """True if every character of ``text`` exists in GSM-7 (basic or extension table)."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def non_gsm7_characters(text: str) -> list[str]:
    """The distinct characters that force UCS-2, in order of appearance (for error messages)."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENDED:
            seen.setdefault(ch, None)
    return list(seen)


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Segments needed for characters of the given costs; a character is never split across segments."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments += 1
            used = 0
        used += cost
    return segments


def analyze(text: str) -> SegmentInfo:
    """Encoding and exact segment count of ``text`` as it would be sent (no transliteration)."""
    if is_gsm7(text):
        costs = [2 if ch in GSM7_EXTENDED else 1 for ch in text]
        return SegmentInfo("GSM-7", _pack(costs, GSM7_SINGLE, GSM7_MULTI), len(text), sum(costs))
    # Astral characters (most emoji) are a surrogate pair: two UTF-16 code units that must stay together.
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SegmentInfo("UCS-2", _pack(costs, UCS2_SINGLE, UCS2_MULTI), len(text), sum(costs))


def _gsm_equivalent(ch: str) -> str | None:
    if ch in GSM7_BASIC or ch in GSM7_EXTENDED:
        return ch
    if ch in _TRANSLITERATIONS:
        return _TRANSLITERATIONS[ch]
    # Latin letters with accents GSM-7 lacks (ā, ő, ê…): drop the accent if what remains is GSM-7.
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    if base and base != ch and is_gsm7(base):
        return base
    return None


def transliterate(text: str) -> str:
    """``text`` in GSM-7, if it needs UCS-2 only because of quotes, dashes, ellipses, odd spaces or accents.

    Anything else (emoji, Arabic script…) cannot be rendered in GSM-7, and then the text is returned
    unchanged: half a transliteration would still go out as UCS-2, only uglier.
    """
    if is_gsm7(text):
        return text
    out: list[str] = []
    for ch in text:
        replacement = _gsm_equivalent(ch)
        if replacement is None:
            return text
        out.append(replacement)
    return "".join(out)


def check_segments(text: str, max_segments: int) -> SegmentInfo:
    """Analyse ``text`` and raise ``TooManySegments`` with a useful message if it is too long."""
    info = analyze(text)
    if info.segments > max_segments:
        per = GSM7_MULTI if info.encoding == "GSM-7" else UCS2_MULTI
        unit = "septets" if info.encoding == "GSM-7" else "UTF-16 units"
        message = (
            f"the text needs {info.segments} SMS segments but at most {max_segments} are allowed "
            f"({info.encoding}, {info.characters} characters, {info.units} {unit}, {per} per segment)"
        )
        if info.encoding == "UCS-2":
            culprits = "".join(non_gsm7_characters(text)[:8])
            message += f"; these characters force UCS-2: {culprits!r}"
        raise TooManySegments(message)
    return info
