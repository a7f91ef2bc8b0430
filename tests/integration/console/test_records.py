"""Subscribers, CSV import and applicant cases in the console: scope, roles, CSRF, masking, XSS."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape

import httpx
from sqlalchemy import func, select

from hub.applicants import CaseInput, UpdateInput, open_case, post_update
from hub.console.pages import subscribers as subscribers_page
from hub.regions import SERVICES
from hub.store.models import AuditEntry, Endpoint, Subscriber, Subscription, Topic
from tests.console import csrf_of, make_staff, sign_in

PASSWORD = "sandi-rahasia-panjang"
SCRIPT = "<script>alert(1)</script>"
SINCE = datetime(2026, 12, 1, 3, 0)  # 10.00 WIB


async def _as(hub, client: httpx.AsyncClient, role: str, office: str = "kota-serang") -> None:
    email = f"{role}@{office}.example.go.id"
    _, secret = await make_staff(hub, email, role, office, PASSWORD)
    assert (await sign_in(client, email, PASSWORD, secret)).status_code == 303


async def _count(hub, model, *where) -> int:
    async with hub.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _subscribe(
    hub, slug: str, channel: str, address: str, state: str = "confirmed", kind: str = "person"
):
    async with hub.db.transaction() as session:
        topic = await session.scalar(select(Topic).where(Topic.slug == slug))
        subscriber = Subscriber(locale="id")
        session.add(subscriber)
        await session.flush()
        endpoint = Endpoint(
            subscriber_id=subscriber.id, channel=channel, address=address, kind=kind, created_at=SINCE
        )
        session.add(endpoint)
        await session.flush()
        session.add(Subscription(topic_id=topic.id, endpoint_id=endpoint.id, state=state, created_at=SINCE))
        return endpoint.id


def _rows(html: str, table_start: str) -> list[list[str]]:
    """The cells' text of every body row of the table that follows ``table_start``."""
    body = html[html.index(table_start) :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def test_subscribers_are_counted_and_listed_masked_a_page_at_a_time(hub, client, monkeypatch):
    await _subscribe(hub, "kota-serang", "sms", "+6281234567890")
    await _subscribe(hub, "kota-serang", "email", "warga.serang@example.com")
    await _subscribe(hub, "kota-serang", "telegram", "-1001234567890", kind="group")
    await _subscribe(hub, "kota-serang", "email", "menunggu@example.com", state="pending")
    await _subscribe(hub, "kota-pekalongan", "email", "pekalongan@example.com")
    await _as(hub, client, "viewer")
    page = await client.get("/console/pelanggan")
    assert page.status_code == 200
    counts = _rows(page.text, 'id="counts"')
    assert counts == [
        ["Disdukcapil Kota Serang (kota-serang)", "1", "1", "1", "3"],
        *(
            [f"Disdukcapil Kota Serang: {name} (kota-serang/{key})", "0", "0", "0", "0"]
            for key, name in sorted(SERVICES.items())
        ),
    ]
    assert _rows(page.text, 'id="list"') == [
        ["+62*******890", "sms", "Perorangan", "Ya", "1 Des 2026 10.00 WIB"],
        ["w***@example.com", "email", "Perorangan", "Ya", "1 Des 2026 10.00 WIB"],
        ["-10***90", "telegram", "Grup", "Ya", "1 Des 2026 10.00 WIB"],
    ]
    assert "6281234567890" not in page.text and "warga.serang" not in page.text
    pending = await client.get("/console/pelanggan?topik=kota-serang&status=pending")
    assert _rows(pending.text, 'id="list"') == [
        ["m***@example.com", "email", "Perorangan", "Ya", "1 Des 2026 10.00 WIB"]
    ]
    # Keyset pages: two rows, then the next page starts after the last endpoint shown.
    monkeypatch.setattr(subscribers_page, "PAGE_SIZE", 2)
    first = await client.get("/console/pelanggan?topik=kota-serang")
    assert [row[0] for row in _rows(first.text, 'id="list"')] == ["+62*******890", "w***@example.com"]
    after = re.search(r"setelah=(\d+)", first.text).group(1)
    second = await client.get(f"/console/pelanggan?topik=kota-serang&status=confirmed&setelah={after}")
    assert [row[0] for row in _rows(second.text, 'id="list"')] == ["-10***90"]
    assert "setelah=" not in second.text.split('id="list"')[1]
    # Another office's topic answers like an unknown one.
    for slug in ("kota-pekalongan", "tidak-ada"):
        refused = await client.get(f"/console/pelanggan?topik={slug}")
        assert refused.status_code == 404 and "pekalongan@" not in refused.text


async def _import(client, csv_text: str, *, csrf: bool = True, topic: str = "kota-serang") -> httpx.Response:
    form = await client.get("/console/pelanggan/impor")
    data = {"topic": topic, "channel": "email", "confirmed": "1"}
    if csrf:
        data["csrf"] = csrf_of(form.text)
    return await client.post(
        "/console/pelanggan/impor", data=data, files={"file": ("warga.csv", csv_text.encode(), "text/csv")}
    )


async def test_a_csv_with_one_bad_row_imports_nothing_and_names_the_row(hub, client):
    await _as(hub, client, "editor")
    before = await client.get("/console/pelanggan")
    assert _rows(before.text, 'id="counts"')[0] == ["Disdukcapil Kota Serang (kota-serang)", "0", "0"]
    csv_text = (
        f"email,locale\nsatu@example.com,id\n{SCRIPT},id\n,id\ndua@example.com,fr\ntiga@example.com,en\n"
    )
    bad = await _import(client, csv_text)
    assert bad.status_code == 400 and SCRIPT not in bad.text
    assert "3 baris salah. Tidak ada yang diimpor" in bad.text
    assert _rows(bad.text, 'aria-describedby="import-problems"') == [
        ["3", "invalid email address: An email address must have an @-sign."],
        ["4", "Kolom email kosong."],
        ["5", 'Bahasa "fr" tidak dikenal: pakai id atau en.'],
    ]
    assert await _count(hub, Endpoint) == 0 and await _count(hub, Subscription) == 0
    good = await _import(client, "email,locale\nsatu@example.com,id\ndua@example.com,en\n")
    assert good.status_code == 200, good.text
    assert (
        "2 baris diimpor ke Disdukcapil Kota Serang: 2 pelanggan baru, 0 sudah terkonfirmasi sebelumnya."
        in good.text
    )
    assert 'max="2" value="2"' in good.text
    assert await _count(hub, Subscription, Subscription.state == "confirmed") == 2
    after = await client.get("/console/pelanggan")  # the import recounted before answering
    assert "<h1>Subscribers</h1>" in (await client.get("/console/pelanggan?lang=en")).text
    assert _rows(after.text, 'id="counts"')[0] == ["Disdukcapil Kota Serang (kota-serang)", "2", "2"]
    async with hub.db.session() as session:
        actions = list((await session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars())
    assert actions[-2:] == ["subscribers.import_rejected", "subscribers.import"]


async def test_import_needs_an_editor_a_csrf_token_and_an_own_topic(hub, client, other_client):
    await _as(hub, client, "editor")
    stale = await _import(client, "email\nsatu@example.com\n", csrf=False)
    assert stale.status_code == 403 and "Formulir kedaluwarsa" in stale.text
    other = await _import(client, "email\nsatu@example.com\n", topic="kota-pekalongan")
    assert other.status_code == 400 and "Pilih salah satu topik kantor Anda." in other.text
    no_column = await _import(client, "nama\nBudi\n")
    assert no_column.status_code == 400 and "kolom email, address atau phone" in no_column.text
    await _as(hub, other_client, "viewer")
    assert (await other_client.get("/console/pelanggan/impor")).status_code == 403
    page = await other_client.get("/console/pelanggan")
    refused = await other_client.post(
        "/console/pelanggan/impor",
        data={"csrf": csrf_of(page.text), "topic": "kota-serang", "channel": "email"},
        files={"file": ("w.csv", b"email\nsatu@example.com\n", "text/csv")},
    )
    assert refused.status_code == 403
    assert await _count(hub, Endpoint) == 0


async def test_a_case_is_found_by_reference_with_its_timeline_and_never_its_pin(hub, client):
    contacts = [{"channel": "email", "address": "pemohon@example.com"}]
    opened = await open_case(
        hub, "kota-serang", CaseInput(reference="3673-KK-0001", document="KK", contacts=contacts)
    )
    await post_update(
        hub,
        "kota-serang",
        "3673-KK-0001",
        UpdateInput(status="needs_document", missing_documents=["Akta kelahiran"]),
    )
    await post_update(hub, "kota-serang", "3673-KK-0001", UpdateInput(status="ready", pickup_place=SCRIPT))
    other = await open_case(hub, "kota-pekalongan", CaseInput(reference="3375-KK-0009", document="KK"))
    await _as(hub, client, "viewer")
    found = await client.get("/console/kasus?referensi=3673-KK-0001")
    assert found.status_code == 303 and found.headers["location"] == f"/console/kasus/{opened.case_id}"
    page = await client.get(found.headers["location"])
    assert page.status_code == 200
    timeline = page.text[page.text.index('id="timeline"') :]
    steps = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", li)).strip()
        for li in re.findall(r"<li>(.*?)</li>", timeline, re.S)
    ]
    assert [s.split(" · ")[1] for s in steps] == [
        "Perlu dokumen Dokumen yang kurang Akta kelahiran",
        "Siap diambil Tempat pengambilan &lt;script&gt;alert(1)&lt;/script&gt;",
    ]
    assert SCRIPT not in page.text
    assert "email: p***@example.com" in page.text and "pemohon@" not in page.text
    assert opened.pin not in page.text and opened.link_code not in page.text
    # Another office's reference and id answer exactly as unknown ones.
    unknown = await client.get("/console/kasus?referensi=3375-KK-0404")
    foreign = await client.get("/console/kasus?referensi=3375-KK-0009")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.text.replace("3375-KK-0009", "X") == unknown.text.replace("3375-KK-0404", "X")
    by_id = await client.get(f"/console/kasus/{other.case_id}")
    missing = await client.get("/console/kasus/999999")
    assert by_id.status_code == missing.status_code == 404
    assert by_id.text.replace(f"/kasus/{other.case_id}", "/kasus/X") == missing.text.replace(
        "/kasus/999999", "/kasus/X"
    )
    xss = await client.get("/console/kasus", params={"referensi": SCRIPT})
    assert xss.status_code == 404 and SCRIPT not in xss.text and "&lt;script&gt;" in xss.text
    async with hub.db.session() as session:
        viewed = await session.scalar(select(AuditEntry).where(AuditEntry.action == "case.view"))
    assert viewed.target == f"case:{opened.case_id}"
