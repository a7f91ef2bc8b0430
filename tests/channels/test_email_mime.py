"""A broadcast email patched per recipient is the email a whole ``EmailMessage`` build gives.

``channels.email_mime`` builds a rendering's message once and patches To, Date, Message-ID and the
unsubscribe link into copies of its bytes. Compared here with ``EmailChannel.build`` serialised the way
aiosmtplib's ``send_message`` serialises it, for several recipients and several kinds of rendering: byte
for byte apart from the boundary (random per build) and List-Unsubscribe (written as RFC 2369 has it),
and parsed back with the ``email`` package, header by header and body by body.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest
from aiosmtplib.email import flatten_message

from channels.base import Content, NoPacing, Outbound, Sent
from channels.email import EmailChannel
from tests.conftest import Mailbox

SENDER = "Disdukcapil Kota Pekalongan <no-reply@disdukcapil.example.go.id>"
MARK = "[[unsubscribe_url]]"
BODY = (
    "Pelayanan tatap muka di kantor Disdukcapil ditutup sementara. Pengajuan KTP-el, KK dan akta dapat "
    "dilakukan secara daring melalui aplikasi resmi. Pengambilan dokumen tetap dilayani pukul 08.00–11.00 "
    "WIB dengan protokol kesehatan."
)
FOOTER = "\n\n--\nAnda menerima pesan ini karena berlangganan informasi Kota Pekalongan.\n"
PAGE = (
    '<!DOCTYPE html>\n<html lang="id">\n<body style="font-family: Arial, sans-serif; line-height: 1.5; '
    'color: #222;">\n<div style="white-space: pre-line;">' + BODY + '</div>\n<p><a href="' + MARK + '">'
    "Berhenti berlangganan</a></p>\n</body>\n</html>\n"
)
#: Renderings that take different paths through the ``email`` package's encoders.
RENDERINGS = {
    # text and HTML, quoted-printable (non-ASCII and long lines), the link split by soft line breaks
    "announcement": Content(
        text=BODY + FOOTER + "Berhenti berlangganan: " + MARK + "\n", html=PAGE, subject="Pengumuman layanan"
    ),
    # short ASCII lines: 7bit while the link's line fits in 78 characters, quoted-printable once it does not
    "short ascii": Content(text="Jam layanan berubah.\n\n" + MARK + "\n", subject="Jam layanan", locale="en"),
    # mostly non-Latin text: base64
    "base64": Content(text="お知らせ。" * 30 + "\n" + MARK + "\n", subject="お知らせ", locale="en"),
}


def _item(i: int, content: Content, *, address: str | None = None, url: str | None = "default") -> Outbound:
    if url == "default":
        url = f"https://hub.example.go.id/v1/unsubscribe/{10**i}.{i * 7}.tm0ab{i}.Kx9-_bQ{'z' * (i % 5)}"
    text, html = content.text, content.html
    if url is not None:
        text, html = text.replace(MARK, url), html and html.replace(MARK, url)
    return Outbound(
        delivery_id=1000 + i,
        address=address or f"warga{i}@mail.example.com",
        content=Content(text=text, html=html, subject=content.subject, locale=content.locale),
        unsubscribe_url=url,
    )


def _channel() -> EmailChannel:
    return EmailChannel(host="127.0.0.1", port=25, sender=SENDER, allow_test_domains=True)


def _boundary(data: bytes) -> bytes:
    found = re.search(rb'boundary="([^"]+)"', data)
    assert found is not None
    return found.group(1)


def _compare(channel: EmailChannel, item: Outbound) -> bool:
    """True when the fast path answered (and its bytes match a whole build); False when it declined."""
    piece = channel.templates.render(item, channel.message_id(item))
    if piece is None:
        return False
    date = channel.templates._dates.value.decode()  # the Date the patched copy carries
    whole = flatten_message(channel.build(item, date=date), utf8=False, cte_type="8bit")
    fast = piece.data
    unsubscribe = re.compile(rb"\r\nList-Unsubscribe:.*?\r\n(?! )", re.S)
    if item.unsubscribe_url:
        assert f"\r\nList-Unsubscribe: <{item.unsubscribe_url}>\r\n".encode() in fast
    assert unsubscribe.sub(b"\r\n", fast).replace(_boundary(fast), b"B") == unsubscribe.sub(
        b"\r\n", whole
    ).replace(_boundary(whole), b"B")
    a = email.message_from_bytes(whole, policy=email.policy.default)
    b = email.message_from_bytes(fast, policy=email.policy.default)
    # (a List-Unsubscribe the email package folds onto its own line parses back with a leading space)
    assert [(k, str(v).strip()) for k, v in a.items() if k != "Content-Type"] == [
        (k, str(v).strip()) for k, v in b.items() if k != "Content-Type"
    ]
    assert [(p.get_content_type(), p.get_content()) for p in a.iter_parts()] == [
        (p.get_content_type(), p.get_content()) for p in b.iter_parts()
    ]
    assert b["To"] == item.address and b["Message-ID"] == channel.message_id(item)
    return True


@pytest.mark.parametrize("kind", sorted(RENDERINGS))
def test_each_recipient_gets_the_bytes_of_a_whole_build(kind: str) -> None:
    channel = _channel()
    items = [_item(i, RENDERINGS[kind]) for i in range(1, 9)]
    items.append(_item(9, RENDERINGS[kind], url="https://hub.example.go.id/v1/unsubscribe/" + "k" * 60))
    answered = [_compare(channel, item) for item in items]
    if kind == "short ascii":  # 7bit until the link outgrows its line: then another encoding, built whole
        assert answered == [True] * 8 + [False]
    else:
        assert all(answered)  # the broadcast case takes the fast path for every recipient


def test_no_unsubscribe_link_and_no_html() -> None:
    channel = _channel()
    content = Content(text="Berkas Anda siap diambil.\n" + "x" * 100 + "\n", subject="Status")
    assert all(_compare(channel, _item(i, content, url=None)) for i in range(1, 4))


def test_a_subject_taken_from_a_first_line_with_the_link_is_each_recipients_own() -> None:
    channel = _channel()
    content = Content(text="Berhenti berlangganan: " + MARK + "\n\nIsi pengumuman.\n")
    assert [_compare(channel, _item(i, content)) for i in range(1, 4)] == [False] * 3


@pytest.mark.parametrize(
    "address",
    [
        "a..b@example.com",
        ".a@example.com",
        "Upper.Case+tag@Sub.Example.CO.ID",
        "x" * 70 + "@example.com",
        "wärga@example.com",
        'quoted"@example.com',
    ],
)
def test_unusual_addresses_are_patched_exactly_or_built_whole(address: str) -> None:
    channel = _channel()
    _compare(channel, _item(1, RENDERINGS["announcement"]))  # the template
    _compare(channel, _item(2, RENDERINGS["announcement"], address=address))


@pytest.mark.parametrize(
    "url", ["https://hub.test/u/" + "y" * 300, "https://hub.test/u?a=1&b=2", "https://h/ü"]
)
def test_unusual_links_are_patched_exactly_or_built_whole(url: str) -> None:
    channel = _channel()
    _compare(channel, _item(1, RENDERINGS["announcement"]))
    _compare(channel, _item(2, RENDERINGS["announcement"], url=url))


async def test_a_broadcast_reaches_the_server_with_each_recipients_own_link(
    smtp: tuple[Mailbox, int],
) -> None:
    box, port = smtp
    channel = EmailChannel(host="127.0.0.1", port=port, sender=SENDER, pool_size=2, allow_test_domains=True)
    items = [_item(i, RENDERINGS["announcement"]) for i in range(1, 6)]
    try:
        outcomes = {i: o async for i, o in channel.send(items, NoPacing())}
    finally:
        await channel.close()
    assert outcomes == {it.delivery_id: Sent(channel.message_id(it)) for it in items}
    for it in items:
        (got,) = box.to(it.address)
        assert isinstance(got, EmailMessage)
        assert got["List-Unsubscribe"] == f"<{it.unsubscribe_url}>"
        assert got["Message-ID"] == channel.message_id(it)
        plain, html = (p.get_content().replace("\r\n", "\n") for p in got.iter_parts())
        assert plain == it.content.text and html == it.content.html
