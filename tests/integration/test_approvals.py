"""The two-person rule (hub.approvals): thresholds, who may approve, sending back, the urgent bypass."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub import announcements, approvals, subscriptions
from hub.announcements import AnnouncementInput, AnnouncementNotFound
from hub.approvals import Actor, NotAllowed
from hub.errors import Conflict, InvalidInput
from hub.store.models import Announcement, AuditEntry, Message

SERANG = frozenset({"kota-serang"})
BANTEN = frozenset({"banten-provinsi", "kota-serang", "kabupaten-serang"})
AUTHOR = Actor(staff_id=1, offices=SERANG)
APPROVER = Actor(staff_id=2, approver=True, offices=BANTEN)
ADMIN = Actor(staff_id=3, approver=True, admin=True, offices=SERANG)
LINK = {
    "link_name": "E-pusda",
    "url": "https://e-pusda.example.go.id",
    "description": "Perpustakaan kota tutup dua minggu; koleksi tetap bisa dibaca daring.",
}


async def _draft(hub, *, topics=("kota-serang",), regions=(), created_by=1) -> int:
    req = AnnouncementInput(template="link", data=LINK, topics=list(topics), regions=list(regions))
    ann, _ = await announcements.create(hub, req, publish=False, created_by=created_by)
    return ann.id


async def _subscribers(hub, n: int) -> None:
    for i in range(n):
        await subscriptions.subscribe(hub, "kota-serang", "email", f"w{i}@mail.example.com", confirmed=True)


async def _row(hub, announcement_id: int) -> Announcement:
    async with hub.db.session() as session:
        return await session.get(Announcement, announcement_id)


async def test_the_author_cannot_approve_their_own_another_approver_publishes_it(hub):
    author_approver = Actor(staff_id=1, approver=True, offices=SERANG)
    ann_id = await _draft(hub)
    await approvals.submit(hub, author_approver, ann_id)
    submitted = await _row(hub, ann_id)
    assert submitted.state == "awaiting_approval" and submitted.submitted_at is not None

    with pytest.raises(NotAllowed, match="author cannot approve"):
        await approvals.approve(hub, author_approver, ann_id)
    with pytest.raises(NotAllowed, match="approver role"):
        await approvals.approve(hub, Actor(staff_id=9, offices=SERANG), ann_id)  # an editor
    # Waiting for approval, it cannot be published past the rule either (the API's publish route).
    with pytest.raises(Conflict, match="awaiting approval"):
        await announcements.publish_announcement(hub, ann_id)
    assert (await _row(hub, ann_id)).state == "awaiting_approval"

    message = await approvals.approve(hub, APPROVER, ann_id)
    approved = await _row(hub, ann_id)
    assert (approved.state, approved.approved_by, message.announcement_id) == ("published", 2, ann_id)
    assert approved.approved_at is not None
    with pytest.raises(Conflict, match="not awaiting approval"):
        await approvals.approve(hub, Actor(staff_id=5, approver=True, offices=SERANG), ann_id)


async def test_an_approver_of_another_office_sees_nothing_to_approve(hub):
    ann_id = await _draft(hub)
    await approvals.submit(hub, AUTHOR, ann_id)
    pekalongan = Actor(staff_id=4, approver=True, admin=True, offices=frozenset({"kota-pekalongan"}))
    for act in (
        approvals.approve(hub, pekalongan, ann_id),
        approvals.send_back(hub, pekalongan, ann_id, "tidak"),
    ):
        with pytest.raises(AnnouncementNotFound):
            await act
    assert (await _row(hub, ann_id)).state == "awaiting_approval"


async def test_the_threshold_counts_recipients_per_office(hub):
    await _subscribers(hub, 3)
    ann_id = await _draft(hub)
    hub.settings.console.approval_recipients = 2
    rule = await approvals.rule_for(hub, await _row(hub, ann_id))
    assert (rule.needed, rule.recipients, rule.threshold) == (True, 3, 2)
    with pytest.raises(NotAllowed, match="3 recipients are more than the office's 2"):
        await approvals.publish(hub, APPROVER, ann_id)
    assert (await _row(hub, ann_id)).state == "draft"

    hub.settings.console.office_approval_recipients = {"kota-serang": 3}  # this office's own threshold
    assert not (await approvals.rule_for(hub, await _row(hub, ann_id))).needed
    with pytest.raises(NotAllowed, match="approver role"):
        await approvals.publish(hub, AUTHOR, ann_id)  # an editor submits; only an approver publishes
    await approvals.publish(hub, APPROVER, ann_id)
    assert (await _row(hub, ann_id)).state == "published"


async def test_any_region_wide_send_needs_approval_even_to_nobody(hub):
    ann_id = await _draft(hub, topics=(), regions=("36.73",))
    rule = await approvals.rule_for(hub, await _row(hub, ann_id))
    assert (rule.needed, rule.recipients, rule.region_wide) == (True, 0, True)
    with pytest.raises(NotAllowed, match="whole region"):
        await approvals.publish(hub, APPROVER, ann_id)
    hub.settings.console.approval_region_wide = False
    assert not (await approvals.rule_for(hub, await _row(hub, ann_id))).needed


async def test_urgent_bypass_is_an_admins_only(hub):
    ann_id = await _draft(hub, topics=(), regions=("36.73",), created_by=3)
    with pytest.raises(NotAllowed, match="only an admin"):
        await approvals.publish(hub, APPROVER, ann_id, urgent=True)
    assert (await _row(hub, ann_id)).state == "draft"
    message = await approvals.publish(hub, ADMIN, ann_id, urgent=True)  # the author, an admin
    row = await _row(hub, ann_id)
    assert (row.state, row.approved_by, message.announcement_id) == ("published", 3, ann_id)


async def test_sending_back_keeps_the_draft_with_the_comment(hub):
    ann_id = await _draft(hub)
    await approvals.submit(hub, AUTHOR, ann_id)
    with pytest.raises(InvalidInput, match="comment"):
        await approvals.send_back(hub, APPROVER, ann_id, "   ")
    with pytest.raises(NotAllowed):
        await approvals.send_back(hub, Actor(staff_id=1, approver=True, offices=SERANG), ann_id, "ok")
    await approvals.send_back(hub, APPROVER, ann_id, "Tambahkan jam layanan hari Sabtu.")
    row = await _row(hub, ann_id)
    assert (row.state, row.review_comment, row.approved_at) == (
        "draft",
        "Tambahkan jam layanan hari Sabtu.",
        None,
    )
    assert row.data["link_name"] == "E-pusda"  # the draft itself is kept as it was
    async with hub.db.session() as session:
        assert await session.get(Message, 1) is None  # nothing was published
    await approvals.submit(hub, AUTHOR, ann_id)
    row = await _row(hub, ann_id)
    assert (row.state, row.review_comment) == ("awaiting_approval", None)


async def test_an_api_key_cannot_approve_what_it_wrote(hub):
    req = AnnouncementInput(template="link", data=LINK, topics=["kota-serang"])
    ann, _ = await announcements.create(hub, req, publish=False, created_key_id=7)
    same_key = Actor(key_id=7, approver=True, offices=SERANG)
    await approvals.submit(hub, same_key, ann.id)
    with pytest.raises(NotAllowed, match="author"):
        await approvals.approve(hub, same_key, ann.id)
    await approvals.approve(hub, Actor(key_id=8, approver=True, offices=SERANG), ann.id)
    assert (await _row(hub, ann.id)).state == "published"


async def test_api_submit_approve_and_send_back_follow_the_rule(hub):
    import httpx

    from hub.api.app import create_app
    from hub.keys import create_key

    async def key(office: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await create_key(hub, office, 'staff', 'staff')}"}

    writer, reviewer, elsewhere = (
        await key("kota-serang"),
        await key("kota-serang"),
        await key("kota-pekalongan"),
    )
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api:
        body = {"template": "link", "data": LINK, "topics": ["kota-serang"], "action": "draft"}
        ann_id = (await api.post("/v1/announcements", json=body, headers=writer)).json()["id"]
        submitted = await api.post(f"/v1/announcements/{ann_id}/submit", headers=writer)
        assert submitted.status_code == 200 and submitted.json() == {
            "id": ann_id,
            "state": "awaiting_approval",
            "recipients": 0,
            "approval_required": False,
            "reason": "",
        }
        blocked = await api.post(f"/v1/announcements/{ann_id}/publish", headers=writer)
        assert blocked.status_code == 409 and "awaiting approval" in blocked.json()["error"]
        own = await api.post(f"/v1/announcements/{ann_id}/approve", headers=writer)
        assert own.status_code == 403 and "author cannot approve" in own.json()["error"]
        other = await api.post(f"/v1/announcements/{ann_id}/approve", headers=elsewhere)
        assert other.status_code == 404 and other.json() == {"error": f"announcement {ann_id} not found"}
        empty = await api.post(
            f"/v1/announcements/{ann_id}/send-back", json={"comment": ""}, headers=reviewer
        )
        assert empty.status_code == 422 and "comment" in empty.json()["error"]
        back = await api.post(
            f"/v1/announcements/{ann_id}/send-back", json={"comment": "Perbaiki tautan."}, headers=reviewer
        )
        assert back.json() == {"id": ann_id, "state": "draft", "review_comment": "Perbaiki tautan."}
        await api.post(f"/v1/announcements/{ann_id}/submit", headers=writer)
        approved = await api.post(f"/v1/announcements/{ann_id}/approve", headers=reviewer)
        assert approved.status_code == 200 and approved.json()["state"] == "planning"
        again = await api.post(f"/v1/announcements/{ann_id}/approve", headers=reviewer)
        assert again.status_code == 409
        shown = (await api.get(f"/v1/announcements/{ann_id}", headers=writer)).json()
        assert shown["state"] == "published" and shown["approved_at"] is not None
        async with hub.db.session() as session:
            audited = (await session.execute(select(AuditEntry.action, AuditEntry.staff_email))).all()
        assert [action for action, _ in audited] == [
            "announcement.submit",
            "announcement.send_back",
            "announcement.submit",
            "announcement.approve",
        ]
        assert all(who.startswith("api-key:") for _, who in audited)
        docs = (await api.get("/openapi.json")).json()["paths"]
        assert {"403", "404", "409"} <= set(
            docs["/v1/announcements/{announcement_id}/approve"]["post"]["responses"]
        )
