"""The two-person rule over the API: submit a draft, approve it, or send it back with a comment.

An API key acts as itself: the key that wrote an announcement cannot approve it (hub.approvals). Each act
is appended to the audit log, with the key's id as who.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from hub import announcements, approvals
from hub.api.deps import HubDep, StaffKey, refuse_bad_text
from hub.api.errors import KEYED, documented
from hub.context import Hub
from hub.regions import offices_under
from hub.store.models import ApiKey, Office

#: The same bounds as hub.api.app's ids: a larger number names nothing.
AnnouncementId = Annotated[int, Path(ge=1, le=2**63 - 1, description="An announcement id")]

router = APIRouter(dependencies=[Depends(refuse_bad_text)], tags=["approvals"])


class SendBackBody(BaseModel):
    comment: str = Field(min_length=1, max_length=2000, description="What the author should change")


async def _actor(hub: Hub, key: ApiKey) -> approvals.Actor:
    async with hub.db.session() as session:
        office = await session.get(Office, key.office_id)
        offices = frozenset(await offices_under(session, office.region_code)) if office else frozenset()
    return approvals.Actor(key_id=key.id, approver=True, offices=offices)


async def _audit(hub: Hub, key: ApiKey, action: str, announcement_id: int, **detail: Any) -> None:
    from hub.console import audit

    async with hub.db.transaction() as session:
        await audit.record(
            session,
            None,
            action,
            f"announcement:{announcement_id}",
            {"api_key": key.id, **detail},
            email=f"api-key:{key.prefix}",
            office_id=key.office_id,
        )


@router.post("/v1/announcements/{announcement_id}/submit", responses=documented(*KEYED, 404, 409))
async def submit(announcement_id: AnnouncementId, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """Ask for a second person's approval (a draft only). Says whether the two-person rule requires it."""
    actor = await _actor(hub, key)
    ann = await approvals.submit(hub, actor, announcement_id)
    rule = await approvals.rule_for(hub, ann)
    await _audit(hub, key, "announcement.submit", announcement_id)
    return {
        "id": announcement_id,
        "state": ann.state,
        "recipients": rule.recipients,
        "approval_required": rule.needed,
        "reason": rule.reason,
    }


@router.post("/v1/announcements/{announcement_id}/approve", responses=documented(*KEYED, 404, 409))
async def approve(announcement_id: AnnouncementId, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """Approve and so publish one awaiting approval; never by the key that wrote it (403).

    Errors: 403 for the key that wrote it; 404 for another office's; 409 when it is not awaiting approval.
    """
    actor = await _actor(hub, key)
    message = await approvals.approve(hub, actor, announcement_id)
    await _audit(hub, key, "announcement.approve", announcement_id, message_id=message.id)
    return {
        "id": announcement_id,
        "message_id": message.id,
        "state": message.state,
        "send_at": await announcements.send_time(hub, message),
    }


@router.post("/v1/announcements/{announcement_id}/send-back", responses=documented(*KEYED, 404, 409))
async def send_back(
    announcement_id: AnnouncementId, body: SendBackBody, hub: HubDep, key: StaffKey
) -> dict[str, Any]:
    """Back to draft with a comment for its author."""
    actor = await _actor(hub, key)
    ann = await approvals.send_back(hub, actor, announcement_id, body.comment)
    await _audit(hub, key, "announcement.send_back", announcement_id, comment=body.comment)
    return {"id": announcement_id, "state": ann.state, "review_comment": ann.review_comment}
