"""An act and its audit row commit together; an act that fails leaves no row saying it was done."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hub import announcements, approvals
from hub.clock import utcnow
from hub.console import audit
from hub.console.auth import Role
from hub.store.models import Announcement, AuditEntry
from tests.console import csrf_of
from tests.integration.console.conftest import sqlite_only
from tests.integration.console.test_announcements import HOURS, _post, _signed_in

database = pytest.fixture(sqlite_only)

FREE = announcements.AnnouncementInput(
    template="free_text", topics=["kota-pekalongan"], data={"title": "Uji", "text": "Pesan uji."}
)


async def _actions(hub) -> list[str]:
    async with hub.db.session() as session:
        return list((await session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars())


async def _state(hub, ann_id: int) -> str:
    async with hub.db.session() as session:
        return (await session.get(Announcement, ann_id)).state


async def test_a_submit_whose_audit_row_fails_does_not_happen(hub):
    ann, _ = await announcements.create(hub, FREE, publish=False, created_by=7)
    actor = approvals.Actor(staff_id=7, offices=frozenset({"kota-pekalongan"}))

    async def failing(session) -> None:
        raise RuntimeError("the audit log cannot be written")

    with pytest.raises(RuntimeError):
        await approvals.submit(hub, actor, ann.id, audit=failing)
    assert await _state(hub, ann.id) == "draft"

    async def written(session) -> None:
        await audit.record(session, None, "announcement.submit", f"announcement:{ann.id}", email="x@y.go.id")
        assert (await session.get(Announcement, ann.id)).state == "awaiting_approval"  # the same transaction

    await approvals.submit(hub, actor, ann.id, audit=written)
    assert (await _state(hub, ann.id), await _actions(hub)) == ("awaiting_approval", ["announcement.submit"])


async def test_the_pages_submit_and_send_back_write_their_row_with_the_change(hub, client, other_client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    await _signed_in(hub, other_client, "approver@pekalongan.go.id", Role.APPROVER)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    url = submitted.headers["location"]
    check = await other_client.get(url)
    back = await other_client.post(
        f"{url}/tindakan", data={"csrf": csrf_of(check.text), "action": "send_back", "comment": "Sabtu?"}
    )
    assert back.status_code == 303 and "galat" not in back.headers["location"]
    again = await other_client.post(
        f"{url}/tindakan", data={"csrf": csrf_of(check.text), "action": "send_back", "comment": "lagi"}
    )
    assert again.headers["location"].endswith("?galat=state")  # a draft now: refused, and not recorded
    actions = [a for a in await _actions(hub) if a.startswith("announcement.")]
    assert actions == ["announcement.draft", "announcement.submit", "announcement.send_back"]


async def test_an_approval_whose_publication_fails_writes_no_approval_row(hub, client, other_client):
    await _signed_in(hub, client, "editor@pekalongan.go.id", Role.EDITOR)
    await _signed_in(hub, other_client, "approver@pekalongan.go.id", Role.APPROVER)
    page = await client.get("/console/pengumuman/baru?jenis=hours_changed")
    submitted = await _post(client, "/console/pengumuman/baru", {**HOURS, "action": "submit"}, page.text)
    url = submitted.headers["location"]
    ann_id = int(url.rsplit("/", 1)[1])
    async with hub.db.transaction() as session:  # its validity ran out while it waited
        (await session.get(Announcement, ann_id)).valid_until = utcnow() - timedelta(minutes=1)
    check = await other_client.get(url)
    refused = await _post(other_client, f"{url}/tindakan", {"action": "approve"}, check.text)
    assert "galat=" in refused.headers["location"]
    assert await _state(hub, ann_id) == "awaiting_approval"
    assert "announcement.approve" not in await _actions(hub)
