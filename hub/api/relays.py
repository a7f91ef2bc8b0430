"""Kelurahan relays over the API (issue 11): list, pause, resume, remove, and per announcement who
confirmed passing it on; plus the page an email relay's signed link opens to confirm.

Staff keys act within their office's subtree of the region tree, like the other routes: another office's
relay or announcement answers 404, the same as one that does not exist.
"""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hub import signing
from hub.api.deps import HubDep, StaffKey, refuse_bad_text
from hub.api.errors import KEYED, ErrorBody, documented
from hub.context import Hub
from hub.regions import offices_under
from hub.relays import acks, codes, manage
from hub.relays.outbound import LINK_PURPOSE
from hub.store.models import ApiKey, Office

router = APIRouter(dependencies=[Depends(refuse_bad_text)], tags=["relays"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="A relay (its endpoint id) or announcement id")]
#: An email relay's confirm link works this long after it was sent.
LINK_DAYS = 30


async def _offices(hub: Hub, key: ApiKey) -> frozenset[str]:
    async with hub.db.session() as session:
        office = await session.get(Office, key.office_id)
        return frozenset(await offices_under(session, office.region_code)) if office else frozenset()


@router.get("/v1/relays", responses=documented(*KEYED))
async def list_relays(
    hub: HubDep,
    key: StaffKey,
    office: Annotated[str | None, Query(max_length=64, description="Only this office's relays")] = None,
) -> dict[str, Any]:
    """The relays registered for the offices the key acts for (addresses masked)."""
    offices = await _offices(hub, key)
    wanted = sorted(offices if office is None else offices & {office})
    return {"items": [r.as_dict() for r in await manage.list_relays(hub, wanted)]}


@router.post("/v1/relays/{relay_id}/pause", responses=documented(*KEYED, 404))
async def pause(relay_id: Id, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """Send the relay nothing until resumed; it stays registered."""
    return (await manage.change(hub, relay_id, "pause", await _offices(hub, key))).as_dict()


@router.post("/v1/relays/{relay_id}/resume", responses=documented(*KEYED, 404))
async def resume(relay_id: Id, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """Undo a pause (422 for a relay its channel deactivated: it must register again)."""
    return (await manage.change(hub, relay_id, "resume", await _offices(hub, key))).as_dict()


@router.delete("/v1/relays/{relay_id}", responses=documented(*KEYED, 404))
async def remove(relay_id: Id, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """End the relay's subscriptions and its relay mark; what it confirmed stays on record."""
    return (await manage.change(hub, relay_id, "remove", await _offices(hub, key))).as_dict()


@router.get("/v1/announcements/{announcement_id}/relays", responses=documented(*KEYED, 404))
async def announcement_relays(announcement_id: Id, hub: HubDep, key: StaffKey) -> dict[str, Any]:
    """Per relay the announcement reached: confirmed (when, how, masked by whom) or not, reminded,
    office told. Times in the office's zone."""
    return await manage.acks_of(hub, announcement_id, await _offices(hub, key))


# ---------------------------------------------------------------------------------------------------------
# The email relay's confirm link: GET shows the choices, POST records (a link scanner confirms nothing)

_TEXT = {
    "q": "Sudah meneruskan pengumuman ini kepada warga? Lewat mana? / Passed this announcement on? How?",
    "btn": "Sudah diteruskan / Passed on",
    "unsaid": "tidak disebut / not said",
    "bad": "Tautan ini tidak valid atau sudah tidak berlaku. / This link is not valid or has expired.",
    "confirmed": "Terima kasih, tercatat: sudah diteruskan. / Thank you, recorded: passed on.",
    "already": "Konfirmasi ini sudah tercatat sebelumnya. / This confirmation was already recorded.",
    "refused": "Tautan ini tidak berlaku untuk pesan ini. / This link is not valid for this message.",
}


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!DOCTYPE html><html lang="id"><head><meta charset="utf-8"><title>Disdukcapil</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        '<body style="font-family: Arial, sans-serif; max-width: 560px; margin: 40px auto;">'
        f"{body}</body></html>",
        status_code=status,
    )


#: A link that is not one answers a page, or ``{"error": ...}`` to a client that asks for JSON only.
BAD_LINK = {
    "description": "The link is not a relay confirm link this hub made, or it expired",
    "content": {
        "text/html": {"schema": {"type": "string"}},
        "application/json": {"schema": ErrorBody.model_json_schema()},
    },
}


def _refuse(request: Request, key: str) -> Response:
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse({"error": _TEXT[key]}, status_code=400)
    return _page(html.escape(_TEXT[key]), 400)


def _delivery(hub: Hub, token: str) -> int | None:
    for key in hub.verification_keys:
        try:
            values = signing.read(key, LINK_PURPOSE, token, max_age=timedelta(days=LINK_DAYS)).values
        except signing.BadToken:
            continue
        if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 18:
            return int(values[0])
    return None


@router.get(
    "/v1/relays/ack/{token}", response_class=HTMLResponse, responses=documented(422, html=True, _400=BAD_LINK)
)
async def ack_page(token: Annotated[str, Path(max_length=200)], request: Request, hub: HubDep) -> Response:
    """The confirm page: the means as choices and one button; showing it records nothing."""
    if _delivery(hub, token) is None:
        return _refuse(request, "bad")
    choices = "".join(
        f'<p><label><input type="radio" name="means" value="{m}"> '
        f"{html.escape(codes.means_name('id', m))} / {html.escape(codes.means_name('en', m))}</label></p>"
        for m in codes.MEANS
    )
    unsaid = f'<p><label><input type="radio" name="means" value="" checked> {_TEXT["unsaid"]}</label></p>'
    return _page(
        f'<form method="post"><p>{html.escape(_TEXT["q"])}</p>{choices}{unsaid}'
        f'<button type="submit">{html.escape(_TEXT["btn"])}</button></form>'
    )


@router.post(
    "/v1/relays/ack/{token}",
    response_class=HTMLResponse,
    responses=documented(422, 503, html=True, _400=BAD_LINK),
)
async def ack(token: Annotated[str, Path(max_length=200)], request: Request, hub: HubDep) -> Response:
    """Record the confirmation (once; a second post changes nothing but a means still unsaid)."""
    delivery_id = _delivery(hub, token)
    if delivery_id is None:
        return _refuse(request, "bad")
    form = parse_qs((await request.body()).decode("utf-8", "replace")[:1000])
    means = codes.means_of((form.get("means") or [""])[0])
    result = await acks.acknowledge(
        hub, delivery_id, channel="email", address=None, sender="", via="link", means=means
    )
    if result.outcome == "refused":
        return _refuse(request, "refused")
    said = "already" if result.outcome == "already" else "confirmed"
    return _page(html.escape(_TEXT[said]))
