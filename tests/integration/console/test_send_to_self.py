"""'Send a test to yourself': one email to the signed-in user's address, nothing to subscribers."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from hub import subscriptions
from hub.console.auth import Role
from hub.delivery import drain
from hub.store.models import Announcement, AuditEntry, Message
from tests.integration.console.conftest import sqlite_only
from tests.integration.console.test_announcements import HOURS, _count, _post, _signed_in

database = pytest.fixture(sqlite_only)

CITIZEN = "warga@mail.example.com"
SUBJECT = "Dindukcapil Kota Pekalongan: jam layanan baru"


async def _audit(hub) -> list[tuple[str, str, str]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(AuditEntry.action, AuditEntry.staff_email, AuditEntry.target)
            .where(AuditEntry.action.like("announcement.%"))
            .order_by(AuditEntry.id)
        )
        return [tuple(r) for r in rows.all()]


async def test_the_composer_sends_the_rendered_email_to_the_user_only(hub, client, mailbox):
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", CITIZEN, confirmed=True)
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    preview = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "preview"}, page.text)
    assert 'value="test"' in preview.text
    assert f"<strong>Subjek:</strong> {SUBJECT}" in preview.text
    sent = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "test"}, preview.text)
    assert sent.status_code == 200
    [notice] = re.findall(r'<p class="notice" role="status" id="tested">(.*?)</p>', sent.text)
    assert notice == "Email uji dikirim ke editor@pekalongan.go.id. Tidak ada yang dikirim ke pelanggan."
    await drain(hub)
    assert [(m["To"], m["Subject"]) for m in mailbox.messages] == [("editor@pekalongan.go.id", SUBJECT)]
    body = mailbox.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "08.00–11.00 WIB" in body and "unsubscribe" not in body.lower()
    assert await _count(hub, Announcement) == 0  # nothing stored but the one-off message
    assert await _count(hub, Message) == 1 and await _count(hub, Message, Message.kind == "test") == 1
    assert await _audit(hub) == [("announcement.test_send", "editor@pekalongan.go.id", "")]


async def test_the_check_page_sends_the_stored_announcement_to_the_approver_only(
    hub, client, other_client, mailbox
):
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", CITIZEN, confirmed=True)
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    await _signed_in(hub, other_client, "approver@pekalongan.go.id", Role.APPROVER)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    url = submitted.headers["location"]
    check = await other_client.get(url)
    assert 'value="test"' in check.text
    tested = await _post(other_client, f"{url}/tindakan", {"action": "test"}, check.text)
    assert tested.headers["location"] == f"{url}?uji=1"
    shown = await other_client.get(tested.headers["location"])
    assert 'id="tested">Email uji dikirim ke approver@pekalongan.go.id.' in shown.text
    await drain(hub)
    assert [(m["To"], m["Subject"]) for m in mailbox.messages] == [("approver@pekalongan.go.id", SUBJECT)]
    ann_id = url.rsplit("/", 1)[1]
    async with hub.db.session() as session:
        assert (await session.get(Announcement, int(ann_id))).state == "awaiting_approval"
    assert (await _audit(hub))[-1] == (
        "announcement.test_send",
        "approver@pekalongan.go.id",
        f"announcement:{ann_id}",
    )
