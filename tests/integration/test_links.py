"""Citizens' links and the public form (issue 9, holes 6 and 7).

Old links never revive what a citizen ended: a confirmation link made before an unsubscribe, a bounce or
an erasure changes nothing and says so; links expire (confirm after 7 days, unsubscribe after 180) and
answer a page that says what to do. The public form mails one address at most 3 times a day and never
makes the hub write to a bounced address again until its owner opens a fresh confirmation link.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from datetime import timedelta
from html.parser import HTMLParser

import httpx
import pytest
from sqlalchemy import select

from hub import announcements, citizens, clock, subscriptions
from hub.api.app import create_app
from hub.delivery import drain
from hub.store.models import Endpoint, Subscription

TOPIC = "kota-sukabumi"

CONFIRM_EXPIRED = """\
Tautan konfirmasi sudah kedaluwarsa
Tautan konfirmasi hanya berlaku 7 hari setelah dikirim. Langganan Anda belum aktif. Untuk berlangganan, \
daftarkan alamat email Anda sekali lagi, lalu buka tautan dalam email konfirmasi yang baru.
This confirmation link has expired
Confirmation links are valid for 7 days after they are sent. Your subscription is not active. To \
subscribe, enter your email address again and open the link in the new confirmation email."""

CONFIRM_SUPERSEDED = """\
Tautan konfirmasi sudah tidak berlaku
Langganan Anda berubah setelah tautan ini dikirim (misalnya Anda berhenti berlangganan, menghapus data \
Anda, atau email tidak dapat terkirim ke alamat ini), jadi tautan ini tidak mengubah apa pun. Untuk \
berlangganan, daftarkan alamat email Anda sekali lagi, lalu buka tautan dalam email konfirmasi yang baru.
This confirmation link is no longer valid
Your subscription changed after this link was sent (for example, you unsubscribed, erased your data, or \
email to this address could not be delivered), so this link changed nothing. To subscribe, enter your \
email address again and open the link in the new confirmation email."""

UNSUBSCRIBE_EXPIRED = """\
Tautan berhenti berlangganan sudah kedaluwarsa
Tautan ini hanya berlaku 180 hari setelah pesannya dikirim, jadi tidak ada yang diubah. Untuk berhenti \
berlangganan, buka tautan "Berhenti berlangganan" di bagian bawah email terbaru dari kami.
This unsubscribe link has expired
This link is valid for 180 days after its message was sent, so nothing was changed. To unsubscribe, open \
the "Unsubscribe" link at the bottom of our most recent email."""


@pytest.fixture
async def api(hub):
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


class _Text(HTMLParser):
    """The text a browser shows of a page's body, one line per heading or paragraph."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.in_body = self.in_body or tag == "body"
        if tag in ("h1", "h2", "p", "button", "br"):
            self.lines.append("")

    def handle_data(self, data: str) -> None:
        if self.in_body:
            self.lines[-1:] = [(self.lines[-1] if self.lines else "") + data]


def visible(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "\n".join(" ".join(line.split()) for line in parser.lines if line.strip())


async def _subscribe(api, address: str, topic: str = TOPIC) -> httpx.Response:
    answer = await api.post("/v1/subscriptions/email", json={"topic": topic, "email": address})
    assert answer.status_code == 202, answer.text
    return answer


def _confirm_links(mailbox, address: str) -> list[str]:
    return [
        re.search(r"http://hub\.test(/v1/confirm/\S+)", m.get_body(("plain",)).get_content()).group(1)
        for m in mailbox.to(address)
        if "/v1/confirm/" in m.get_body(("plain",)).get_content()
    ]


async def _announce(hub, title: str = "Info") -> None:
    request = announcements.AnnouncementInput(
        template="free_text", topics=[TOPIC], data={"title": title, "text": f"{title}: isi pesan."}
    )
    await announcements.create(hub, request, publish=True)
    await drain(hub)


def _announcements_to(mailbox, address: str) -> list:
    return [m for m in mailbox.to(address) if m["List-Unsubscribe"]]


async def _states(hub, address: str) -> tuple[bool | None, list[str]]:
    async with hub.db.session() as session:
        endpoint = await session.scalar(select(Endpoint).where(Endpoint.address == address))
        if endpoint is None:
            return None, []
        states = (
            await session.execute(select(Subscription.state).where(Subscription.endpoint_id == endpoint.id))
        ).scalars()
        return endpoint.active, sorted(states)


def _later(monkeypatch, delta: timedelta) -> None:
    """Time passes: the hub's clock reads ``delta`` later from now on."""
    real = clock.utcnow
    monkeypatch.setattr(clock, "utcnow", lambda: real() + delta)


# -- hole 7: the public form ------------------------------------------------------------------------------


async def test_25_subscribe_requests_for_one_address_send_at_most_3_confirmations(hub, mailbox):
    """From 25 different clients, so that the per-client limit of the route (``hub.api.limits``) stays
    out of the way: the limit per address holds by itself."""
    victim, other = "korban@mail.example.com", "lain@mail.example.com"
    topics = [TOPIC, "kota-serang", "kota-pekalongan", "kota-serang/kk", "kota-serang/kia"]
    app = create_app(hub)

    async def ask(client: int, topic: str, address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(f"10.0.0.{client}", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api:
            return await api.post("/v1/subscriptions/email", json={"topic": topic, "email": address})

    answers = await asyncio.gather(*(ask(i, topics[i % 5], victim) for i in range(25)))
    assert [a.status_code for a in answers] == [202] * 25
    assert {a.json()["message"] for a in answers} == {
        "Periksa kotak masuk Anda dan buka tautan konfirmasi."
    }  # the asker learns nothing about the limit
    assert (await ask(99, TOPIC, other)).status_code == 202
    await drain(hub)
    assert len(mailbox.to(victim)) == 3
    assert len(mailbox.to(other)) == 1  # the limit is per address


async def test_subscribing_never_makes_the_hub_write_to_a_bounced_address_again(hub, api, mailbox):
    address = "pindah@mail.example.com"
    await _subscribe(api, address)
    await drain(hub)
    [old_link] = _confirm_links(mailbox, address)
    assert (await api.get(old_link)).status_code == 200
    mailbox.refuse[address] = (550, "5.1.1 <pindah@mail.example.com>: user unknown")
    await _announce(hub, "Pertama")
    assert await _states(hub, address) == (False, ["confirmed"])  # the bounce deactivated it

    del mailbox.refuse[address]  # the address works again; someone types it into the form
    await _subscribe(api, address)
    await _subscribe(api, address, "kota-serang")
    await _announce(hub, "Kedua")
    assert _announcements_to(mailbox, address) == []
    assert await _states(hub, address) == (False, ["confirmed", "pending"])

    # The confirmation link sent before the bounce revives nothing.
    stale = await api.get(old_link)
    assert stale.status_code == 410 and visible(stale.text) == CONFIRM_SUPERSEDED
    await _announce(hub, "Ketiga")
    assert _announcements_to(mailbox, address) == []
    assert (await _states(hub, address))[0] is False

    # The owner opens the fresh confirmation that asking again sent: only now does mail flow again.
    await drain(hub)
    fresh = _confirm_links(mailbox, address)[-1]
    assert fresh != old_link
    answer = await api.get(fresh)
    assert answer.status_code == 200
    assert visible(answer.text) == "Terima kasih. Langganan Anda sudah dikonfirmasi."
    await _announce(hub, "Keempat")
    [mail] = _announcements_to(mailbox, address)
    assert "Keempat: isi pesan." in mail.get_body(("plain",)).get_content()


# -- hole 6: old links --------------------------------------------------------------------------------------


async def test_an_old_confirmation_link_after_unsubscribe_does_nothing(hub, api, mailbox):
    address = "ibu@mail.example.com"
    await _subscribe(api, address)
    await drain(hub)
    [first] = _confirm_links(mailbox, address)
    assert (await api.get(first)).status_code == 200
    await _announce(hub, "Pertama")
    [announcement] = _announcements_to(mailbox, address)
    unsubscribe = announcement["List-Unsubscribe"].strip().strip("<>").removeprefix("http://hub.test")
    assert (await api.post(unsubscribe)).status_code == 200

    # Someone else types the address into the form: a new pending request the owner never confirms.
    await _subscribe(api, address)
    await drain(hub)
    again = await api.get(first)  # the old email, opened again (or by a link scanner)
    assert again.status_code == 410 and visible(again.text) == CONFIRM_SUPERSEDED
    assert await _states(hub, address) == (True, ["pending"])
    await _announce(hub, "Kedua")
    assert len(_announcements_to(mailbox, address)) == 1  # only "Pertama"

    # The newest confirmation still works, and opening it twice is harmless.
    newest = _confirm_links(mailbox, address)[-1]
    for _ in range(2):
        answer = await api.get(newest)
        assert answer.status_code == 200
        assert visible(answer.text) == "Terima kasih. Langganan Anda sudah dikonfirmasi."
    assert await _states(hub, address) == (True, ["confirmed"])


async def test_a_confirmation_link_of_an_erased_address_does_nothing(hub, api, mailbox):
    address = "hapus@mail.example.com"
    await _subscribe(api, address)
    await drain(hub)
    [link] = _confirm_links(mailbox, address)
    erased = await citizens.erase(hub, address, "email", actor="staff")
    assert erased["endpoints"] == 1
    answer = await api.get(link)
    assert answer.status_code == 410 and visible(answer.text) == CONFIRM_SUPERSEDED
    assert await _states(hub, address) == (None, [])


async def test_an_expired_confirmation_link_answers_the_expired_page(hub, api, mailbox, monkeypatch):
    address = "lambat@mail.example.com"
    await _subscribe(api, address)
    await drain(hub)
    [link] = _confirm_links(mailbox, address)
    _later(monkeypatch, timedelta(days=7, minutes=1))
    answer = await api.get(link)
    assert answer.status_code == 410 and visible(answer.text) == CONFIRM_EXPIRED
    assert await _states(hub, address) == (True, ["pending"])


async def test_an_unsubscribe_link_works_180_days_and_then_answers_the_expired_page(
    hub, api, mailbox, monkeypatch
):
    address = "lama@mail.example.com"
    await subscriptions.subscribe(hub, TOPIC, "email", address, confirmed=True)
    await _announce(hub)
    [mail] = _announcements_to(mailbox, address)
    link = mail["List-Unsubscribe"].strip().strip("<>").removeprefix("http://hub.test")
    _later(monkeypatch, timedelta(days=181))
    answer = await api.post(link)
    assert answer.status_code == 410 and visible(answer.text) == UNSUBSCRIBE_EXPIRED
    assert await _states(hub, address) == (True, ["confirmed"])
    monkeypatch.undo()
    _later(monkeypatch, timedelta(days=179))
    assert (await api.post(link)).status_code == 200
    assert await _states(hub, address) == (True, ["unsubscribed"])


def _undated(hub, purpose: str, *values: int) -> str:
    """A link as the hub made them before links carried a time (still in citizens' inboxes)."""
    payload = ".".join(str(v) for v in values)
    mac = hmac.new(hub.secret, f"{purpose}:{payload}".encode(), hashlib.sha256).digest()[:16]
    return f"/v1/{purpose}/{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_links_sent_before_links_carried_a_time_unsubscribe_but_never_confirm(hub, api, mailbox):
    address = "dulu@mail.example.com"
    result = await subscriptions.subscribe(hub, TOPIC, "email", address)
    await drain(hub)
    old_confirm = _undated(hub, "confirm", result.endpoint_id, result.confirmation_message_id)
    answer = await api.get(old_confirm)
    assert answer.status_code == 410 and visible(answer.text) == CONFIRM_EXPIRED
    assert await _states(hub, address) == (True, ["pending"])

    assert (await api.get(_confirm_links(mailbox, address)[0])).status_code == 200
    old_unsubscribe = _undated(hub, "unsubscribe", result.endpoint_id, result.confirmation_message_id)
    answer = await api.post(old_unsubscribe)
    assert answer.status_code == 200
    assert visible(answer.text) == (
        "Anda sudah berhenti berlangganan. Anda tidak akan menerima pesan lagi dari topik ini."
    )
    assert await _states(hub, address) == (True, ["unsubscribed"])
