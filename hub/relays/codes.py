"""Acknowledgement codes: short, typed by hand in an SMS, checked with the deployment key.

A code is the delivery id in base 36 followed by six base-32 characters of HMAC-SHA256 over it, upper
case: ``3FKQ7ZAB``. Nothing is stored: the code names the delivery, the delivery names the relay's chat,
and an ack is taken only from that chat (``hub.relays.acks``). Thirty bits of MAC make guessing a code
hopeless, and a guessed code would still have to come from the chat it was sent to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tomllib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

MAC_LENGTH = 6
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: How a relay passed a message on; the words a relay may type for each (Indonesian and English).
MEANS = ("whatsapp_group", "notice_board", "mosque", "rt_rw_meeting", "other")
MEANS_WORDS: dict[str, str] = {
    "wa": "whatsapp_group",
    "whatsapp": "whatsapp_group",
    "grup": "whatsapp_group",
    "papan": "notice_board",
    "pengumuman": "notice_board",
    "board": "notice_board",
    "masjid": "mosque",
    "musala": "mosque",
    "mosque": "mosque",
    "rt": "rt_rw_meeting",
    "rw": "rt_rw_meeting",
    "rapat": "rt_rw_meeting",
    "meeting": "rt_rw_meeting",
    "lain": "other",
    "lainnya": "other",
    "other": "other",
}
#: The short word of each means, for button data (Telegram allows 64 bytes).
MEANS_SHORT = {
    "whatsapp_group": "wa",
    "notice_board": "papan",
    "mosque": "masjid",
    "rt_rw_meeting": "rt",
    "other": "lain",
}


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, f"relay-ack:{payload}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:MAC_LENGTH]


def make_code(key: bytes, delivery_id: int) -> str:
    number, digits = delivery_id, ""
    while True:
        number, rest = divmod(number, 36)
        digits = _DIGITS[rest] + digits
        if number == 0:
            break
    return digits + _mac(key, digits)


def read_code(keys: Sequence[bytes], code: str) -> int | None:
    """The delivery id a genuine code names (made with any of ``keys``: the current one and those before
    a rotation); None for anything else (forged, mistyped, too long)."""
    code = code.strip().upper()
    if not 1 + MAC_LENGTH <= len(code) <= 20 or not code.isascii() or not code.isalnum():
        return None
    digits, mac = code[:-MAC_LENGTH], code[-MAC_LENGTH:]
    if not any(hmac.compare_digest(_mac(key, digits), mac) for key in keys):
        return None
    return int(digits, 36)


def means_of(word: str) -> str | None:
    """The means a typed word names (``WA``, ``papan``, ``whatsapp_group``); None when it names none."""
    word = word.strip(".,!?:;").lower()
    return word if word in MEANS else MEANS_WORDS.get(word)


@lru_cache(maxsize=4)
def _texts(locale: str) -> dict[str, Any]:
    path = Path(__file__).with_name(f"{locale}.toml")
    if not path.is_file():
        path = Path(__file__).with_name("id.toml")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def text(locale: str, key: str, **values: Any) -> str:
    """A relay text in ``locale`` (Indonesian when the locale has none), with its fields filled."""
    return str(_texts(locale if locale in ("id", "en") else "id")[key]).format(**values)


def means_name(locale: str, means: str | None) -> str:
    return str(_texts(locale if locale in ("id", "en") else "id")["means"].get(means or "", means or "-"))
