"""Printable notices over the API (issue 11): an announcement of the key's office subtree as a PDF."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from hub import notices
from hub.api.deps import HubDep, StaffKey, refuse_bad_text
from hub.api.errors import KEYED, documented
from hub.regions import office_in_scope
from hub.store.models import Announcement

#: The same bounds as hub.api.app's ids: a larger number names nothing.
AnnouncementId = Annotated[int, Path(ge=1, le=2**63 - 1, description="An announcement id")]

router = APIRouter(dependencies=[Depends(refuse_bad_text)], tags=["announcements"])

PDF_RESPONSE = {
    "description": "The notice, one page of A4 or A5 (a long announcement may take more)",
    "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {"ETag": {"description": "The notice's version", "schema": {"type": "string"}}},
}


@router.get(
    "/v1/announcements/{announcement_id}/notice.pdf",
    response_class=Response,
    responses=documented(*KEYED, 404, html=True, _200=PDF_RESPONSE),
)
async def announcement_notice(
    announcement_id: AnnouncementId,
    hub: HubDep,
    key: StaffKey,
    size: Annotated[Literal["a4", "a5"], Query(description="Paper size")] = "a4",
    lang: Annotated[
        Literal["id", "en"], Query(description="Language (Indonesian when not written in it)")
    ] = "id",
) -> Response:
    """A printable notice of the announcement, in any state (staff check a draft's before publishing)."""
    async with hub.db.session() as session:
        ann = await session.get(Announcement, announcement_id)
        # Another office's answers as one that does not exist: nothing to learn from ids.
        if ann is None or not await office_in_scope(session, key.office_id, ann.office_id):
            raise HTTPException(404, f"announcement {announcement_id} not found")
    made = await notices.announcement_notice(hub, announcement_id, size=size, locale=lang)
    return Response(
        made.pdf,
        media_type="application/pdf",
        headers={"ETag": f'"{made.version}"', "Content-Disposition": f'inline; filename="{made.filename}"'},
    )
