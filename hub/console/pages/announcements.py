"""The announcement path of the console: dashboard, composer with preview, check page, detail, correction.

Every page reads only the signed-in user's offices (another office's id answers the 404 page); every
POST checks its CSRF token first (``web.form``) and every change is appended to the audit log. The
two-person rule is hub.approvals'; these pages only offer what it allows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from hub import announcements, approvals, audience
from hub.approvals import Actor
from hub.clock import to_local
from hub.console import audit, compose, previews, queries, trial, web
from hub.console.auth import Role, Staff, need
from hub.console.pages.relays import relay_section
from hub.context import Hub
from hub.errors import HubError
from hub.regions import offices_under
from hub.store.models import Announcement, StaffUser, Topic

router = APIRouter()
MAX_ID = 2**63 - 1


def _hub(request: Request) -> Hub:
    return request.app.state.hub


def _actor(staff: Staff) -> Actor:
    return Actor(
        staff_id=staff.id,
        approver=staff.role >= Role.APPROVER,
        admin=staff.role >= Role.ADMIN,
        offices=staff.offices,
    )


async def _record(hub: Hub, staff: Staff, action: str, ann_id: int, **detail: Any) -> None:
    """The audit row of an act the domain did in transactions of its own: written after it succeeded."""
    async with hub.db.transaction() as session:
        await _audit(staff, action, ann_id, **detail)(session)


def _audit(staff: Staff, action: str, ann_id: int, **detail: Any) -> approvals.Audit:
    """The audit row of an act done in one transaction, written in it (hub.approvals runs it there)."""

    async def write(session: Any) -> None:
        await audit.record(session, staff, action, f"announcement:{ann_id}", detail)

    return write


async def own(request: Request, staff: Staff, raw_id: str) -> Announcement:
    """The announcement if it is one of the user's offices'; else the 404 page, like a missing one."""
    ann = None
    if raw_id.isdigit() and 0 < int(raw_id) <= MAX_ID:
        async with _hub(request).db.session() as session:
            ann = await session.get(Announcement, int(raw_id))
    if ann is None or ann.office_id not in staff.offices:
        from hub.console.auth import ConsoleExit

        raise ConsoleExit(web.not_found(request, staff))
    return ann


async def _outside(hub: Hub, staff: Staff, req: announcements.AnnouncementInput) -> bool:
    """True when a target reaches an office outside the user's subtree."""
    async with hub.db.session() as session:
        offices = set(
            (await session.execute(select(Topic.office_id).where(Topic.slug.in_(req.topics)))).scalars()
        )
        for code in req.regions:
            try:
                offices.update(await offices_under(session, code))
            except LookupError:
                continue  # prepare names the unknown region
    return not offices <= staff.offices


# -- dashboard ----------------------------------------------------------------------------------------


@router.get("/")
async def dashboard(request: Request, staff: Staff = Depends(need(Role.VIEWER))) -> HTMLResponse:
    """Announcements by phase with each channel's progress; one phase paged with ``?fase=&halaman=``."""
    phase = request.query_params.get("fase")
    phase = phase if phase in queries.PHASES else None
    page_text = request.query_params.get("halaman", "1")
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) < 100000 else 1
    board = await queries.dashboard(_hub(request), staff.offices, phase, page)
    return web.page(
        request, "announcements/dashboard.html.j2", staff, board=board, phase=phase, phases=queries.PHASES
    )


# -- composer -----------------------------------------------------------------------------------------


async def _composer(
    request: Request,
    staff: Staff,
    values: compose.Values,
    *,
    errors: compose.Errors | None = None,
    preview: dict[str, Any] | None = None,
    action: str,
    status_code: int = 200,
    correcting: Announcement | None = None,
    tested: str = "",
) -> HTMLResponse:
    hub = _hub(request)
    template = compose.one(values, "template")
    choices = await queries.targets(hub, staff.offices)
    # Counted by the reconciler (hub.audience): a page view reads rows, it counts nothing.
    regions = await queries.region_counts(hub, [region["code"] for region in choices["regions"]])
    for region in choices["regions"]:
        region["counts"] = regions.get(region["code"], {})
    counts, counted_at = await queries.topic_counts(hub, staff.offices)
    response = web.page(
        request,
        "announcements/compose.html.j2",
        staff,
        status_code=status_code,
        values=values,
        one=lambda name: compose.one(values, name),
        chosen=lambda name: set(compose.many(values, name)),
        kind=template if template in compose.FIELDS else "",
        kinds=list(compose.FIELDS),
        fields=compose.FIELDS.get(template, []),
        week=compose.WEEK,
        errors=compose.localize(errors or {}, web.translator(web.locale_of(request))),
        preview=preview,
        action=action,
        choices=choices,
        counts=counts,
        counted_at=counted_at,
        channels=sorted(hub.channels),
        correcting=correcting,
        tested=tested,
    )
    return web.allow_frame_styles(response, previews.emails(preview))


@router.get("/pengumuman/baru")
async def new(request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> HTMLResponse:
    """Pick a kind (``?jenis=``), then its fields; works without JavaScript."""
    kind = request.query_params.get("jenis", "")
    values: compose.Values = {"template": kind} if kind in compose.FIELDS else {}
    return await _composer(request, staff, values, action="/console/pengumuman/baru")


async def _checked(
    request: Request, staff: Staff, values: compose.Values, correcting: Announcement | None = None
) -> tuple[announcements.AnnouncementInput | None, compose.Errors, dict[str, Any] | None]:
    """The input, or errors per field; with a preview (renderings and audience) when it is valid."""
    hub = _hub(request)
    if correcting is not None:  # a correction goes to the original's recipients: no targets to pick
        values = {
            **values,
            "topics": correcting.targets.get("topics", []),
            "regions": correcting.targets.get("regions", []),
        }
    req, errors = compose.input_from(values)
    if req is None:
        return None, errors, None
    if correcting is None and await _outside(hub, staff, req):
        return None, {"targets": compose.Err("outside")}, None
    try:
        # The recipients as last counted (hub.audience); publishing and the approval rule count for real.
        _, topic_ids = await announcements.resolve_topics(hub, req.topics, req.regions, req.services)
        estimate = await audience.estimate(hub, req.regions, topic_ids)
        preview = await announcements.preview(hub, req, known=estimate.counts)
        preview = await previews.readable(hub, preview)
    except HubError as exc:
        return None, dict([compose.where(str(exc))]), None
    preview["estimate"] = estimate
    return req, {}, preview


async def _saveable(
    request: Request, staff: Staff, values: compose.Values, action: str, target: str
) -> tuple[announcements.AnnouncementInput | None, Response | None]:
    """The checked input when the button saves; otherwise the page to answer (preview, errors, test send)."""
    req, errors, preview = await _checked(request, staff, values)
    if req is not None and action == "test":
        return None, await _test(request, staff, values, req, preview, target=target)
    if req is None or action not in ("draft", "submit", "publish", "urgent"):
        status = 422 if errors else 200
        page = await _composer(
            request,
            staff,
            values,
            errors=errors,
            preview=preview,
            action=request.url.path,
            status_code=status,
        )
        return None, page
    return req, None


@router.post("/pengumuman/baru")
async def create(request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> Response:
    """Preview, save as draft, submit for approval, or publish (an approver, under the threshold)."""
    values = await web.form(request)
    hub = _hub(request)
    action = compose.one(values, "action")
    req, answer = await _saveable(request, staff, values, action, target="")
    if answer is not None:
        return answer
    ann, _ = await announcements.create(hub, req, publish=False, created_by=staff.id)
    await _record(hub, staff, "announcement.draft", ann.id, template=req.template)
    return await _after_save(request, staff, ann.id, action)


async def _after_save(request: Request, staff: Staff, ann_id: int, action: str) -> Response:
    """What the button asked for once the draft is stored: it stays a draft if the act is refused."""
    hub = _hub(request)
    try:
        if action == "submit":
            await approvals.submit(
                hub, _actor(staff), ann_id, audit=_audit(staff, "announcement.submit", ann_id)
            )
        elif action in ("publish", "urgent"):
            message = await approvals.publish(hub, _actor(staff), ann_id, urgent=action == "urgent")
            name = "announcement.urgent_publish" if action == "urgent" else "announcement.publish"
            await _record(hub, staff, name, ann_id, message_id=message.id)
    except HubError as exc:
        return web.redirect(request, f"/console/pengumuman/{ann_id}?galat={_code(exc)}")
    return web.redirect(request, f"/console/pengumuman/{ann_id}")


async def _test(
    request: Request,
    staff: Staff,
    values: compose.Values,
    req: announcements.AnnouncementInput,
    preview: dict[str, Any] | None,
    target: str,
) -> HTMLResponse:
    """Send the previewed announcement to the user's own address; the composer again, saying so."""
    try:
        await trial.send_to_self(_hub(request), staff, req, web.locale_of(request), target)
    except trial.TrialRefused as exc:
        return await _composer(
            request, staff, values, errors={"form": compose.Err(f"test_{exc.code}")}, preview=preview,
            action=request.url.path, status_code=422,
        )  # fmt: skip
    return await _composer(
        request, staff, values, preview=preview, action=request.url.path, tested=staff.email
    )


def _code(exc: HubError) -> str:
    """A short key for the refusal (the message stays out of the URL)."""
    if isinstance(exc, trial.TrialRefused):
        return f"test_{exc.code}"
    text = str(exc)
    if "author cannot" in text:
        return "own"
    if "needs another approver" in text:
        return "needs_approval"
    if "only an admin" in text:
        return "admin_only"
    if "role" in text:
        return "role"
    return "state" if exc.status == 409 else "invalid"


# -- one announcement --------------------------------------------------------------------------------


async def _names(hub: Hub, *user_ids: int | None) -> dict[int, str]:
    """Staff as people read them (name and email), for the author and approver lines."""
    wanted = {i for i in user_ids if i is not None}
    if not wanted:
        return {}
    async with hub.db.session() as session:
        rows = await session.execute(
            select(StaffUser.id, StaffUser.name, StaffUser.email).where(StaffUser.id.in_(wanted))
        )
        return {row.id: f"{row.name} <{row.email}>" for row in rows}


@router.get("/pengumuman/{raw_id}")
async def detail(raw_id: str, request: Request, staff: Staff = Depends(need(Role.VIEWER))) -> HTMLResponse:
    """Counts, failures and their reasons, gone endpoints; the check page while it awaits approval."""
    hub = _hub(request)
    ann = await own(request, staff, raw_id)
    phase, message = await queries.phase_of(hub, ann)
    status = await announcements.delivery.status(hub, message.id) if message else None
    for waiting in status["deferred"] if status else []:  # the office's local time on the page
        at = waiting["next_attempt_at"]
        waiting["next_at"] = datetime.fromisoformat(at.removesuffix("Z")) if at else None
    outcome = await queries.outcome(hub, message.id) if message else None
    check = rule = None
    if ann.state in ("draft", "awaiting_approval"):
        try:
            check = await previews.readable(
                hub, await announcements.preview(hub, announcements.input_of(ann))
            )
            rule = await approvals.rule_for(hub, ann)
        except HubError as exc:
            check = {"error": str(exc)}
    response = web.page(
        request,
        "announcements/detail.html.j2",
        staff,
        ann=ann,
        people=await _names(hub, ann.created_by, ann.approved_by),
        title=queries.title_of(ann.template, ann.data),
        phase=phase,
        message=message,
        status=status,
        outcome=outcome,
        preview=check,
        rule=rule,
        own=_actor(staff).wrote(ann),
        refused=request.query_params.get("galat", ""),
        tested=staff.email if request.query_params.get("uji") == "1" else "",
        live=phase == "sending",
        relays=await relay_section(hub, ann.id) if message else None,
    )
    return web.allow_frame_styles(response, previews.emails(check))


@router.get("/pengumuman/{raw_id}/ubah")
async def edit(raw_id: str, request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> HTMLResponse:
    ann = await own(request, staff, raw_id)
    if ann.state != "draft":
        return web.redirect(request, f"/console/pengumuman/{ann.id}?galat=state")  # type: ignore[return-value]
    values = compose.values_from(ann.template, ann.data, ann.targets, await _local_times(_hub(request), ann))
    return await _composer(request, staff, values, action=request.url.path)


async def _local_times(hub: Hub, ann: Announcement) -> dict[str, str]:
    """Stored UTC times as the form shows them: in the office's zone, as staff typed them."""
    tz = (await announcements.office_context(hub, ann.office_id))["timezone"]
    out = {}
    for name in compose.TIMES:
        value = getattr(ann, name)
        out[name] = to_local(value, tz).strftime("%Y-%m-%dT%H:%M") if value else ""
    return out


@router.post("/pengumuman/{raw_id}/ubah")
async def save(raw_id: str, request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> Response:
    values = await web.form(request)
    hub = _hub(request)
    ann = await own(request, staff, raw_id)
    action = compose.one(values, "action")
    req, answer = await _saveable(request, staff, values, action, target=f"announcement:{ann.id}")
    if answer is not None:
        return answer
    try:
        await announcements.revise(hub, ann.id, req)
    except HubError as exc:
        return web.redirect(request, f"/console/pengumuman/{ann.id}?galat={_code(exc)}")
    await _record(hub, staff, "announcement.update", ann.id)
    return await _after_save(request, staff, ann.id, action)


@router.post("/pengumuman/{raw_id}/tindakan")
async def act(raw_id: str, request: Request, staff: Staff = Depends(need(Role.EDITOR))) -> Response:
    """Submit, approve, send back, publish (urgent too) or cancel; each allowed by hub.approvals only."""
    values = await web.form(request)
    hub = _hub(request)
    ann = await own(request, staff, raw_id)
    action, actor = compose.one(values, "action"), _actor(staff)
    try:
        if action == "submit":
            await approvals.submit(hub, actor, ann.id, audit=_audit(staff, "announcement.submit", ann.id))
        elif action == "approve":
            message = await approvals.approve(hub, actor, ann.id)
            await _record(hub, staff, "announcement.approve", ann.id, message_id=message.id)
            return web.redirect(request, f"/console/pengumuman/{ann.id}")
        elif action == "send_back":
            comment = compose.one(values, "comment")
            written = _audit(staff, "announcement.send_back", ann.id, comment=comment)
            await approvals.send_back(hub, actor, ann.id, comment, audit=written)
        elif action in ("publish", "urgent"):
            return await _after_save(request, staff, ann.id, action)
        elif action == "test":  # from the check page: the stored announcement, to the user only
            req = announcements.input_of(ann)
            await trial.send_to_self(hub, staff, req, web.locale_of(request), f"announcement:{ann.id}")
            return web.redirect(request, f"/console/pengumuman/{ann.id}?uji=1")
        elif action == "cancel":
            if staff.role < Role.APPROVER:
                return web.forbidden(request, staff)
            skipped = await announcements.cancel(hub, ann.id)
            await _record(hub, staff, "announcement.cancel", ann.id, skipped=skipped)
            return web.redirect(request, f"/console/pengumuman/{ann.id}")
        else:
            return web.not_found(request, staff)
    except HubError as exc:
        return web.redirect(request, f"/console/pengumuman/{ann.id}?galat={_code(exc)}")
    return web.redirect(request, f"/console/pengumuman/{ann.id}")


@router.get("/pengumuman/{raw_id}/koreksi")
async def correction_form(
    raw_id: str, request: Request, staff: Staff = Depends(need(Role.APPROVER))
) -> HTMLResponse:
    """The correction, pre-filled from the original; it goes to exactly the original's recipients."""
    ann = await own(request, staff, raw_id)
    values = compose.values_from(ann.template, ann.data, ann.targets, await _local_times(_hub(request), ann))
    values["publish_at"] = ""
    return await _composer(request, staff, values, action=request.url.path, correcting=ann)


@router.post("/pengumuman/{raw_id}/koreksi")
async def correction(raw_id: str, request: Request, staff: Staff = Depends(need(Role.APPROVER))) -> Response:
    values = await web.form(request)
    hub = _hub(request)
    ann = await own(request, staff, raw_id)
    req, errors, preview = await _checked(request, staff, values, correcting=ann)
    if req is None or compose.one(values, "action") != "correct":
        return await _composer(
            request,
            staff,
            values,
            errors=errors,
            preview=preview,
            action=request.url.path,
            status_code=422 if errors else 200,
            correcting=ann,
        )
    try:
        fix, message = await announcements.correct(hub, ann.id, req.model_copy(update={"publish_at": None}))
    except HubError as exc:
        return web.redirect(request, f"/console/pengumuman/{ann.id}?galat={_code(exc)}")
    await _record(hub, staff, "announcement.correct", fix.id, corrects=ann.id, message_id=message.id)
    return web.redirect(request, f"/console/pengumuman/{fix.id}")
