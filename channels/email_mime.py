"""An email's bytes built once per message and language, then patched per recipient.

Why: building an ``EmailMessage`` and serialising it costs about a millisecond of CPU per recipient (the
header registry parses and refolds every header, the generator walks the tree), while a broadcast sends
the same page to every subscriber with four differences: To, Date, Message-ID and the unsubscribe link
(in both bodies and in List-Unsubscribe). So the first recipient of a rendering gets a message built and
serialised by the ``email`` package exactly as ``EmailChannel.build`` does; its bytes are cut where those
four things sit, and every later recipient gets the constant pieces joined around their own values.

Each per-recipient value is produced by the same code the ``email`` package runs for it (its text body
encoder, ``formatdate``); whenever a value could come out differently from a whole build (an address
that would be quoted or folded, a body whose line lengths pick another transfer encoding, a link holding
the boundary), ``render`` answers None and the caller builds the message the slow way.

One deliberate difference: List-Unsubscribe is written as RFC 2369 has it, ``<url>`` on one line. The
``email`` package (3.11) turns a header line over 78 characters without spaces into RFC 2047 encoded
words (``=?utf-8?q?=3Chttps=3A//...``), which mail providers do not decode in List-Unsubscribe, so
their one-click unsubscribe (RFC 8058) does not see the link. Parsed back, both forms give the same value.
"""

from __future__ import annotations

import html as html_lib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.contentmanager import _encode_text  # the encoder set_content itself uses
from email.message import EmailMessage
from email.policy import default as _policy
from email.utils import formatdate

from aiosmtplib.email import extract_recipients, flatten_message

from channels.base import Outbound

#: Stands for the unsubscribe link in a rendering's cache key (a NUL never occurs in rendered text).
MARK = "\x00unsubscribe\x00"
#: Addresses whose header form is the address itself: no quoting, no encoded words, no folding.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+\Z")
#: A link that goes into a header and a body unchanged (RFC 3986 characters, no spaces, no ``>``).
_PLAIN_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+\Z")
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')
_HEADER_END = re.compile(rb"\r\n(?![ \t])")  # the end of a header line that is not folded on
_MAX_HEADER_LINE = 78  # policy.max_line_length: a longer To or Message-ID line would be refolded
_SUBJECT_FROM_TEXT = 120  # without a subject, build() takes the text's first line, up to this long

# Holes in a template, in the order they occur.
_TO, _DATE, _MESSAGE_ID, _UNSUBSCRIBE, _TEXT, _HTML = range(6)


@dataclass(frozen=True, slots=True)
class Piece:
    """What ``render`` gives the sender: the wire bytes and the Message-ID they carry."""

    data: bytes
    message_id: str


@dataclass(frozen=True, slots=True)
class _Template:
    #: Constant bytes; a hole sits between each two (``len(pieces) == len(holes) + 1``).
    pieces: tuple[bytes, ...]
    holes: tuple[int, ...]
    #: The transfer encoding each body was given; a recipient whose body would get another is built whole.
    text_cte: str | None
    html_cte: str | None
    boundary: str


class _Dates:
    """``formatdate()`` once per second instead of once per email."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.value = formatdate(second, localtime=False).encode("ascii")
            self.second = second
        return self.value


def _encoded(body: str) -> tuple[str, bytes]:
    """A text body as ``set_content`` encodes it and the generator writes it (CRLF line ends)."""
    cte, data = _encode_text(body, "utf-8", None, _policy)
    return cte, data.encode("ascii", "surrogateescape").replace(b"\n", b"\r\n")


def page_of(text: str, html: str | None) -> str:
    """The HTML alternative: the rendering's own page, or the text kept as written."""
    if html:
        return html
    return f'<div style="white-space: pre-line">{html_lib.escape(text)}</div>'


class Templates:
    """A small LRU cache of message templates, keyed by rendering (subject, bodies, language)."""

    def __init__(self, build: Callable[..., EmailMessage], size: int = 32) -> None:
        #: ``build(item, date=...)``: the whole message, as sent before this cache existed.
        self.build = build
        self.size = size
        self._cache: OrderedDict[tuple[str | None, ...], _Template | None] = OrderedDict()
        self._dates = _Dates()

    def render(self, item: Outbound, message_id: str) -> Piece | None:
        """The bytes for ``item`` (8-bit SMTP, ASCII envelope), or None: build this one whole."""
        url = item.unsubscribe_url
        address = item.address
        content = item.content
        if (
            not message_id.isascii()
            or not _PLAIN_ADDRESS.match(address)
            or len(address) + 4 > _MAX_HEADER_LINE
            or len(message_id) + 12 > _MAX_HEADER_LINE
        ):
            return None
        page = page_of(content.text, content.html)
        if url is not None:
            if not _PLAIN_URL.match(url) or len(url) > 900:
                return None
            if not content.subject and 0 <= content.text.find(url) < _SUBJECT_FROM_TEXT:
                return None  # the subject, taken from the text, would hold the link
            key = (content.subject, content.text.replace(url, MARK), page.replace(url, MARK), content.locale)
        else:
            key = (content.subject, content.text, page, content.locale, "")
        date = self._dates.now()
        if key in self._cache:
            self._cache.move_to_end(key)
            template = self._cache[key]
            if template is None:  # this rendering cannot be patched
                return None
            return self._fill(template, item, page, date, message_id)
        template, data = self._make(item, date, message_id)
        self._cache[key] = template
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return None if data is None else Piece(data, message_id)

    def _fill(
        self, template: _Template, item: Outbound, page: str, date: bytes, message_id: str
    ) -> Piece | None:
        url = item.unsubscribe_url or ""
        if template.boundary and template.boundary in url:
            return None
        out = [template.pieces[0]]
        for hole, piece in zip(template.holes, template.pieces[1:], strict=True):
            if hole == _TO:
                out.append(item.address.encode("ascii"))
            elif hole == _DATE:
                out.append(date)
            elif hole == _MESSAGE_ID:
                out.append(message_id.encode("ascii"))
            elif hole == _UNSUBSCRIBE:
                out.append(f"List-Unsubscribe: <{url}>".encode("ascii"))
            else:
                cte, body = _encoded(item.content.text if hole == _TEXT else page)
                if cte != (template.text_cte if hole == _TEXT else template.html_cte):
                    return None
                out.append(body)
            out.append(piece)
        return Piece(b"".join(out), message_id)

    def _make(self, item: Outbound, date: bytes, message_id: str) -> tuple[_Template | None, bytes | None]:
        """Build ``item`` whole, cut its bytes into a template; (None, None) if they cannot be cut."""
        message = self.build(item, date=date.decode("ascii"))
        page = page_of(item.content.text, item.content.html)
        flat = flatten_message(message, utf8=False, cte_type="8bit")
        if message["Message-ID"] != message_id or extract_recipients(message) != [item.address]:
            return None, None
        head_end = flat.find(b"\r\n\r\n")
        holes: list[tuple[int, int, int]] = []  # (start, end, kind)

        def header(name: bytes, value: bytes, kind: int) -> bool:
            needle = b"\r\n" + name + b": " + value + b"\r\n"
            at = flat.find(needle, 0, head_end + 2)
            if at < 0 or flat.find(needle, at + 1, head_end + 2) >= 0:
                return False
            start = at + len(name) + 4
            holes.append((start, start + len(value), kind))
            return True

        ok = (
            header(b"To", item.address.encode("ascii"), _TO)
            and header(b"Date", date, _DATE)
            and header(b"Message-ID", message_id.encode("ascii"), _MESSAGE_ID)
        )
        url = item.unsubscribe_url
        ctes: dict[int, str] = {}
        if ok and url is not None:
            start = flat.find(b"\r\nList-Unsubscribe:", 0, head_end) + 2
            end = _HEADER_END.search(flat, start)
            if start < 2 or end is None or end.start() > head_end:
                ok = False
            else:
                holes.append((start, end.start(), _UNSUBSCRIBE))
            # The bodies differ per recipient only when the link is in them (it is, in the footer).
            search_from = head_end
            for kind, body in ((_TEXT, item.content.text), (_HTML, page)):
                if url not in body:
                    continue
                cte, encoded = _encoded(body)
                at = flat.find(b"\r\n\r\n" + encoded, search_from)
                if at < 0:
                    ok = False
                    break
                holes.append((at + 4, at + 4 + len(encoded), kind))
                ctes[kind] = cte
                search_from = at + 4 + len(encoded)
        # The generator picks the boundary on a copy of the message: read it from the bytes.
        found = _BOUNDARY.search(flat, 0, max(head_end, 0))
        boundary = found.group(1).decode("ascii") if found else ""
        if not ok:
            return None, None
        holes.sort()
        pieces, cursor = [], 0
        for start, end, _ in holes:
            if start < cursor:
                return None, None
            pieces.append(flat[cursor:start])
            cursor = end
        pieces.append(flat[cursor:])
        template = _Template(
            tuple(pieces), tuple(k for _, _, k in holes), ctes.get(_TEXT), ctes.get(_HTML), boundary
        )
        data = self._fill(template, item, page, date, message_id)
        return template, None if data is None else data.data
