"""The announcement pages: compose, preview, submit, a second person approves, follow it to done."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from sqlalchemy import func, select

from hub import kinds, subscriptions
from hub.console.auth import Role
from hub.delivery import drain
from hub.store.models import Announcement, AuditEntry
from tests.conftest import ROOT
from tests.console import csrf_of, make_staff, sign_in
from tests.integration.console.conftest import sqlite_only

database = pytest.fixture(sqlite_only)

GOLDEN = ROOT / "tests" / "golden" / "console"
UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"
PASSWORD = "sandi-rahasia-panjang"
HOURS = {
    "template": "hours_changed",
    "hours_monday": "08:00-11:00",
    "hours_tuesday": "08:00-11:00",
    "hours_wednesday": "08:00-11:00",
    "hours_thursday": "08:00-11:00",
    "hours_friday": "08:00-10:00",
    "daily_quota": "50",
    "contacts": (
        "KK dan KTP-el | KK and KTP-el = 0858-7031-0341\npindah datang | moving in or out = 0838-3833-9341"
    ),
    "health_protocol_id": "jaga jarak di antrean\nmasker bagi pemohon dan petugas",
    "health_protocol_en": "distance in the queue\nmasks for applicants and staff",
    "basis": "Surat Edaran Wali Kota Pekalongan Nomor 443.1/001",
    "topics": "kota-pekalongan",
    "valid_from": "2030-03-23T08:00",
    "valid_until": "2030-04-06T08:00",
}


async def _signed_in(hub, client, email, role, office="kota-pekalongan") -> int:
    user_id, secret = await make_staff(hub, email, role, office, PASSWORD)
    response = await sign_in(client, email, PASSWORD, secret)
    assert response.status_code == 303, response.text
    return user_id


async def _post(client: httpx.AsyncClient, url: str, data: dict, page: str) -> httpx.Response:
    return await client.post(url, data={"csrf": csrf_of(page), **data})


async def _count(hub, model, *where) -> int:
    async with hub.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end, html.index(start)) + len(end)]


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with HUB_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8")


async def test_compose_preview_submit_then_another_approver_publishes_to_done(
    hub, client, other_client, mailbox
):
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", "warga@mail.example.com", confirmed=True)
    editor = await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    await _signed_in(hub, other_client, "approver@pekalongan.go.id", Role.APPROVER)

    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    assert page.status_code == 200 and 'id="hours_monday"' in page.text
    preview = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "preview"}, page.text)
    assert preview.status_code == 200
    _golden("preview_hours.html", _section(preview.text, '<section id="preview"', "</section>"))
    assert await _count(hub, Announcement) == 0  # a preview stores nothing

    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    assert submitted.status_code == 303
    [ann_id] = re.findall(r"/console/pengumuman/(\d+)$", submitted.headers["location"])
    async with hub.db.session() as session:
        ann = await session.get(Announcement, int(ann_id))
    assert (ann.state, ann.created_by) == ("awaiting_approval", editor)

    # The editor sees the check page but no approve button; the approver sees both.
    own = await client.get(f"/console/pengumuman/{ann_id}")
    assert 'value="approve"' not in own.text and "Menunggu persetujuan" in own.text
    check = await other_client.get(f"/console/pengumuman/{ann_id}")
    assert 'value="approve"' in check.text and "Pratinjau setiap kanal" in check.text
    approved = await _post(
        other_client, f"/console/pengumuman/{ann_id}/tindakan", {"action": "approve"}, check.text
    )
    assert approved.status_code == 303 and "galat" not in approved.headers["location"]

    await drain(hub)
    [mail] = mailbox.to("warga@mail.example.com")
    assert "08.00–11.00 WIB" in mail.get_body(preferencelist=("plain",)).get_content()
    done = await client.get("/console/?fase=done")
    assert f'href="/console/pengumuman/{ann_id}"' in done.text and "1 dari 1 selesai" in done.text
    report = await client.get(f"/console/pengumuman/{ann_id}/laporan.csv")
    assert report.status_code == 200 and report.text.splitlines()[1:] == [f"{ann_id},1,email,sent,1,"]
    async with hub.db.session() as session:
        actions = list((await session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars())
    assert [a for a in actions if a.startswith("announcement.")] == [
        "announcement.draft",
        "announcement.submit",
        "announcement.approve",
        "announcement.report",
    ]


async def test_the_author_cannot_approve_and_a_sent_back_draft_shows_the_comment(hub, client, other_client):
    await _signed_in(hub, client, "a@pekalongan.go.id", Role.APPROVER)
    await _signed_in(hub, other_client, "b@pekalongan.go.id", Role.APPROVER)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    url = submitted.headers["location"]
    mine = await client.get(url)
    assert "Anda penulis pengumuman ini" in mine.text
    refused = await _post(client, f"{url}/tindakan", {"action": "approve"}, mine.text)
    assert refused.headers["location"].endswith("?galat=own")
    assert "tidak dapat menyetujui" in (await client.get(refused.headers["location"])).text

    check = await other_client.get(url)
    comment = "Tambahkan jam hari Sabtu <b>tebal</b>"
    back = await _post(
        other_client, f"{url}/tindakan", {"action": "send_back", "comment": comment}, check.text
    )
    assert back.status_code == 303
    draft = await client.get(url)
    assert "Draf" in draft.text and "Tambahkan jam hari Sabtu &lt;b&gt;tebal&lt;/b&gt;" in draft.text
    assert await _count(hub, Announcement, Announcement.state == "draft") == 1


async def test_bad_input_is_shown_beside_its_field_and_nothing_is_created(hub, client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    bad = {**HOURS, "hours_monday": "jam 8", "contacts": "tanpa nomor", "action": "draft"}
    answer = await _post(client, "/console/pengumuman/baru", bad, page.text)
    assert answer.status_code == 422
    hours = _section(answer.text, '<div class="field" id="f-hours">', "</div>")
    assert _error(hours, "hours") == "Jam hari Senin harus seperti 08:00-11:00, bukan “jam 8”."
    contacts = _section(answer.text, '<div class="field" id="f-contacts">', "</div>")
    assert "Tulis setiap baris sebagai: layanan = nilai" in contacts
    assert 'value="jam 8"' in answer.text  # what was typed stays in the form
    no_target = await _post(
        client, "/console/pengumuman/baru", {**HOURS, "topics": "", "action": "draft"}, page.text
    )
    assert no_target.status_code == 422 and "Pilih sedikitnya satu topik atau wilayah." in no_target.text
    serang = await _post(
        client, "/console/pengumuman/baru", {**HOURS, "topics": "kota-serang", "action": "draft"}, page.text
    )
    assert serang.status_code == 422 and "di luar kantor Anda" in serang.text
    stale = await client.post("/console/pengumuman/baru", data={**HOURS, "action": "draft", "csrf": "basi"})
    assert stale.status_code == 403 and "Formulir kedaluwarsa" in stale.text
    assert await _count(hub, Announcement) == 0


def _error(html: str, key: str) -> str:
    """The whole text of the error element beside field ``key``."""
    found = re.findall(rf'<p class="field-error" id="err-{key}" role="alert">(.*?)</p>', html, re.DOTALL)
    assert len(found) == 1, html
    return found[0]


async def test_the_kinds_errors_are_shown_in_the_users_language_and_the_api_keeps_english(hub, client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    bad = {**HOURS, "daily_quota": "0", "contacts": "KK = 12", "valid_until": "2030-03-22T08:00"}
    answer = await _post(client, "/console/pengumuman/baru", {**bad, "action": "preview"}, page.text)
    assert answer.status_code == 422
    assert _error(answer.text, "daily_quota") == "Isi angka 1 atau lebih."
    assert _error(answer.text, "contacts") == "Baris 1: Terlalu pendek: sedikitnya 3 karakter."
    client.cookies.set("hub_lang", "en")
    english = await _post(client, "/console/pengumuman/baru", {**bad, "action": "preview"}, page.text)
    assert _error(english.text, "daily_quota") == "Give a number of 1 or more."
    assert _error(english.text, "contacts") == "Line 1: Too short: at least 3 characters."
    # Fields hub.kinds accepts but the announcement as a whole does not (hub.announcements.prepare).
    client.cookies.set("hub_lang", "id")
    late = await _post(
        client, "/console/pengumuman/baru", {**HOURS, "valid_until": "2030-03-22T08:00"}, page.text
    )
    assert _error(late.text, "valid_until") == "“Berlaku sampai” harus setelah “Berlaku mulai”."
    assert await _count(hub, Announcement) == 0
    # The API's texts stay English, now with a code and parameters for whoever wants them.
    with pytest.raises(kinds.KindError) as refused:
        kinds.validate("hours_changed", {"hours": {"monday": "08:00-10:00"}, "daily_quota": 0})
    assert str(refused.value) == (
        "data for template 'hours_changed': daily_quota: Input should be greater than or equal to 1"
    )
    assert (refused.value.field, refused.value.code, refused.value.params) == (
        "daily_quota",
        "greater_than_equal",
        {"ge": 1},
    )


async def test_markup_typed_into_fields_is_shown_as_text(hub, client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    page = await client.get("/console/pengumuman/baru?jenis=free_text")
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    form = {
        "template": "free_text",
        "title_id": attack,
        "text_id": attack,
        "topics": "kota-pekalongan",
        "action": "preview",
    }
    for action in ("preview", "draft"):
        answer = await _post(client, "/console/pengumuman/baru", {**form, "action": action}, page.text)
        if action == "draft":
            answer = await client.get(answer.headers["location"])
        assert "<script>alert" not in answer.text and "<img src=x" not in answer.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in answer.text
    dashboard = await client.get("/console/?fase=draft")
    assert "<script>alert" not in dashboard.text and "&lt;script&gt;" in dashboard.text


async def test_another_offices_announcement_is_not_found_and_unchanged(hub, client, other_client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    await _signed_in(hub, other_client, "approver@serang.go.id", Role.APPROVER, office="kota-serang")
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    url = submitted.headers["location"]
    own_page = await other_client.get("/console/pengumuman/baru")
    for path in (
        url,
        f"{url}/ubah",
        f"{url}/koreksi",
        f"{url}/laporan.csv",
        "/console/pengumuman/99999999999999999999",
    ):
        assert (await other_client.get(path)).status_code == 404, path
    for action in ("approve", "cancel"):
        answer = await _post(other_client, f"{url}/tindakan", {"action": action}, own_page.text)
        assert answer.status_code == 404
    assert await _count(hub, Announcement, Announcement.state == "awaiting_approval") == 1
    assert "Menunggu persetujuan (0)" in (await other_client.get("/console/")).text


async def test_urgent_publishing_without_approval_is_an_admins_audited_act(hub, client, other_client):
    await _signed_in(hub, client, "approver@pekalongan.go.id", Role.APPROVER)
    admin = await _signed_in(hub, other_client, "admin@pekalongan.go.id", Role.ADMIN)
    region_wide = {**HOURS, "topics": "", "regions": "33.75"}
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    refused = await _post(client, "/console/pengumuman/baru", {**region_wide, "action": "publish"}, page.text)
    assert refused.headers["location"].endswith("?galat=needs_approval")
    url = refused.headers["location"].split("?")[0]
    detail = await client.get(url)
    assert "Perlu persetujuan orang kedua" in detail.text and 'value="urgent"' not in detail.text
    denied = await _post(client, f"{url}/tindakan", {"action": "urgent"}, detail.text)
    assert denied.headers["location"].endswith("?galat=admin_only")

    admin_view = await other_client.get(url)
    assert 'value="urgent"' in admin_view.text
    done = await _post(other_client, f"{url}/tindakan", {"action": "urgent"}, admin_view.text)
    assert done.status_code == 303 and "galat" not in done.headers["location"]
    async with hub.db.session() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "announcement.urgent_publish")
        )
        ann = await session.get(Announcement, int(url.rsplit("/", 1)[1]))
    assert entry is not None and entry.staff_id == admin and entry.target == f"announcement:{ann.id}"
    assert (ann.state, ann.approved_by) == ("published", admin)


async def test_cancel_and_a_correction_prefilled_to_the_original_recipients(hub, client, mailbox):
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", "warga@mail.example.com", confirmed=True)
    await _signed_in(hub, client, "approver@pekalongan.go.id", Role.APPROVER)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    published = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "publish"}, page.text)
    url = published.headers["location"]
    await drain(hub)
    form = await client.get(f"{url}/koreksi")
    assert 'value="08:00-11:00"' in form.text and 'name="topics"' not in form.text
    fixed = {**HOURS, "hours_friday": "08:00-11:30", "action": "correct"}
    fixed.pop("topics")
    corrected = await _post(client, f"{url}/koreksi", fixed, form.text)
    assert corrected.status_code == 303, corrected.text
    await drain(hub)
    _, second = mailbox.to("warga@mail.example.com")
    assert "08.00–11.30 WIB" in second.get_body(preferencelist=("plain",)).get_content()

    later = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "draft"}, page.text)
    detail = await client.get(later.headers["location"])
    cancelled = await _post(
        client, f"{later.headers['location']}/tindakan", {"action": "cancel"}, detail.text
    )
    assert cancelled.status_code == 303
    assert "Dibatalkan (1)" in (await client.get("/console/")).text


SMS = {
    "enabled": True,
    "sender": "DUKCAPIL",
    "max_segments": 6,
    "dlr_secret": "console-test",
    "gateways": [{"driver": "kannel", "name": "kannel", "username": "hub", "password": "test",
                  "url": "http://127.0.0.1:9/cgi-bin/sendsms"}],
}  # fmt: skip


@pytest.fixture
async def sms_hub(sqlite_database, redis_url, smtp):
    from tests.conftest import make_settings, start_hub

    settings = make_settings(sqlite_database[0], redis_url, smtp[1])
    settings.channels["sms"] = SMS
    instance = await start_hub(settings)
    try:
        yield instance
    finally:
        await instance.close()


async def test_the_preview_counts_sms_segments_per_recipient_and_for_the_audience(sms_hub):
    from hub.api.app import create_app

    for i in range(3):
        await subscriptions.subscribe(sms_hub, "kota-pekalongan", "sms", f"+62812000000{i}", confirmed=True)
    await subscriptions.subscribe(
        sms_hub, "kota-pekalongan", "email", "warga@mail.example.com", confirmed=True
    )
    transport = httpx.ASGITransport(app=create_app(sms_hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        await _signed_in(sms_hub, client, "editor@pekalongan.go.id", Role.EDITOR)
        page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
        assert "sms 3" in page.text and "email 1" in page.text  # recipients per channel beside the topic
        preview = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "preview"}, page.text)
    section = _section(preview.text, '<section id="preview"', "</section>")
    _golden(
        "preview_hours_sms.html",
        section[section.index('<article class="channel" aria-labelledby="ch-sms">') :],
    )


async def test_a_saved_draft_comes_back_in_the_form_and_can_be_changed(hub, client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    saved = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "draft"}, page.text)
    url = saved.headers["location"]
    form = await client.get(f"{url}/ubah")
    assert 'id="hours_friday" name="hours_friday" value="08:00-10:00"' in form.text
    assert "KK dan KTP-el | KK and KTP-el = 0858-7031-0341" in form.text
    assert 'id="valid_from" name="valid_from" value="2030-03-23T08:00"' in form.text  # office time, as typed
    assert 'value="kota-pekalongan" checked' in form.text
    changed = await _post(
        client, f"{url}/ubah", {**HOURS, "hours_friday": "07:30-10:00", "action": "draft"}, form.text
    )
    assert changed.status_code == 303 and changed.headers["location"] == url
    async with hub.db.session() as session:
        [ann] = (await session.execute(select(Announcement))).scalars().all()
    assert (ann.state, ann.data["hours"]["friday"]) == ("draft", "07:30-10:00")
    english = await client.get("/console/?lang=en")
    assert (
        "Announcements dashboard" in english.text
        and "Drafts" not in english.text
        and "Draft (1)" in english.text
    )
