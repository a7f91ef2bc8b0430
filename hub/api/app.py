"""The HTTP API (FastAPI): REST v1 for staff and intake systems, public subscription links, webhooks.

OpenAPI lives at ``/docs``. Errors are JSON: ``{"error": "what is wrong"}``, and each route lists the
ones it can give. No input answers 500: ids are bounded to 64 bits, link tokens to their alphabet, text
to what every database stores (``deps.refuse_bad_text``), times to the calendar's reach. Public routes
are limited per client (``limits``); tests/integration/test_route_audit.py lists each one and its reason.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select

from channels.base import WebhookRejected, WebhookRequest
from hub import announcements, applicants, delivery, metrics, subscriptions
from hub import health as health_checks
from hub.api import approvals, errors, limits, notices, relays, status
from hub.api.deps import AnyKey, HubDep, IntakeKey, StaffKey, idempotent, refuse_bad_text
from hub.api.errors import KEYED, documented
from hub.console import install as install_console
from hub.context import ChannelNotHere, Hub
from hub.errors import InvalidInput
from hub.inbound import handle_inbound
from hub.logs import log
from hub.privacy import mask
from hub.public import install as install_public
from hub.regions import office_in_scope, offices_under
from hub.store.models import Announcement, Endpoint, Office, Subscription, Topic


def create_app(hub: Hub | None = None, *, settings_path: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if hub is not None:
            app.state.hub = hub
            yield
            return
        from hub.context import build_hub
        from hub.logs import configure, secret_values
        from hub.settings import load_settings

        # A process of its own (uvicorn's app factory): the hub's logging, as every `hub` command sets
        # it up; uvicorn's would keep webhooks' query strings (secrets, numbers, PINs) in access lines.
        settings = load_settings(settings_path)
        configure(settings.log.level, settings.log.json_logs, settings.log.libraries, secret_values(settings))
        built = await build_hub(settings)
        built.role = "api"  # an API process never opens a worker-owned channel session
        app.state.hub = built
        try:
            yield
        finally:
            await built.close()

    app = FastAPI(
        title="Disdukcapil notification hub",
        version="1",
        description="Announcements, applicant updates and subscriptions for civil-registration offices.",
        lifespan=lifespan,
    )
    if hub is not None:  # also without a lifespan run (ASGI test transports)
        app.state.hub = hub

    errors.install(app)
    # Every route but the webhooks refuses text no column can hold; a webhook answers its provider,
    # whose retries a 422 would not stop.
    guarded = APIRouter(dependencies=[Depends(refuse_bad_text)])
    _routes(guarded)
    app.include_router(guarded)
    app.include_router(approvals.router)
    app.include_router(status.router)
    app.include_router(relays.router)
    app.include_router(notices.router)
    _webhooks(app)
    install_console(app)  # the staff console under /console (issue 10)
    install_public(app)  # office pages, feeds, CAP, notices: no sign-in (issue 11)
    return app


#: Ids are 64-bit (BIGINT in PostgreSQL, INTEGER in SQLite): a larger number names nothing.
MAX_ID = 2**63 - 1
AnnouncementId = Annotated[int, Path(ge=1, le=MAX_ID, description="An announcement id")]
MessageId = Annotated[int, Path(ge=1, le=MAX_ID, description="A message id")]

#: Times an announcement may name: far enough from datetime's limits that converting between WIB,
#: WITA, WIT, UTC and the offset given never leaves them.
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(9998, 12, 31)

#: What a link token can look like (``hub.signing``): anything else is refused without a lookup.
TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,200}")


class _Times(announcements.AnnouncementInput):
    @field_validator("valid_from", "valid_until", "publish_at")
    @classmethod
    def _within_reach(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST <= value.replace(tzinfo=None) <= LATEST:
            raise ValueError("must fall between 1970-01-01 and 9998-12-31")
        return value


class PreviewBody(_Times):
    pass


class AnnouncementBody(_Times):
    action: Literal["draft", "publish"] = Field(
        default="publish", description="draft: store only; publish: send now, or at publish_at"
    )


class CorrectionBody(_Times):
    pass


class EmailSubscribe(BaseModel):
    topic: str = Field(max_length=200)
    email: str = Field(max_length=320)
    locale: Literal["id", "en"] = "id"


async def _in_scope(hub: Hub, key: Any, office_id: str) -> bool:
    async with hub.db.session() as session:
        return bool(await office_in_scope(session, key.office_id, office_id))


async def _staff_scope(hub: Hub, key: Any, office_id: str) -> None:
    if not await _in_scope(hub, key, office_id):
        raise HTTPException(403, f"office {office_id} is outside this key's office")


async def _announcement_scope(hub: Hub, key: Any, req: announcements.AnnouncementInput) -> None:
    office_id, topic_ids = await announcements.resolve_topics(hub, req.topics, req.regions, req.services)
    async with hub.db.session() as session:
        offices = set(
            (await session.execute(select(Topic.office_id).where(Topic.id.in_(topic_ids)))).scalars()
        )
    for office in offices | {office_id}:
        await _staff_scope(hub, key, office)


def _routes(app: APIRouter) -> None:
    @app.get("/healthz", tags=["ops"], responses=documented(422))
    async def health(hub: HubDep) -> dict[str, Any]:
        """Liveness: this process answers (200). Asks nothing else: a probe that restarts the hub when the
        database or Redis is down would only add restarts to the outage. Readiness is ``/readyz``."""
        return {"status": "ok", "channels": sorted(hub.channels)}

    @app.get("/readyz", tags=["ops"], responses=documented(422, _503=errors.UNHEALTHY))
    async def ready(hub: HubDep) -> JSONResponse:
        """Readiness: the database and Redis answer and the schema is this release's (``hub.health``).

        200 with ``ok`` per part; else 503 with ``Retry-After``, ``down`` per failing part and ``error``
        naming each with what was found (``migrations: the database is at 0011..., run hub init``).
        """
        checks = await health_checks.readiness(hub)
        body: dict[str, Any] = {check.part: "ok" if check.ok else "down" for check in checks}
        failing = [check for check in checks if not check.ok]
        if not failing:
            return JSONResponse(body)
        error = "; ".join(f"{check.part}: {check.detail}" for check in failing)
        return JSONResponse(
            {"error": f"not ready: {error}", **body},
            status_code=503,
            headers={"Retry-After": str(errors.RETRY_AFTER)},
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, responses=documented(422, html=True))
    async def prometheus(hub: HubDep) -> Response:
        """Prometheus text format (``hub.metrics``): deliveries, send latency, pacer waits, provider
        pushback, reconciler actions; oldest due delivery per lane and queue depth (cached briefly)."""
        content, media_type = await metrics.exposition(hub)
        return Response(content, media_type=media_type)

    # -- announcements (staff) --------------------------------------------------------------------------

    @app.post("/v1/announcements/preview", tags=["announcements"], responses=documented(*KEYED))
    async def preview(body: PreviewBody, hub: HubDep, key: StaffKey) -> dict[str, Any]:
        """Each channel's rendering per locale, with costs and recipient counts. Sends nothing."""
        await _announcement_scope(hub, key, body)
        return await announcements.preview(hub, announcements.AnnouncementInput(**body.model_dump()))

    @app.post("/v1/announcements", status_code=201, tags=["announcements"], responses=documented(*KEYED, 409))
    async def create_announcement(
        body: AnnouncementBody,
        hub: HubDep,
        key: StaffKey,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        await _announcement_scope(hub, key, body)
        req = announcements.AnnouncementInput(**body.model_dump(exclude={"action"}))

        async def run(within: Any) -> tuple[int, dict[str, Any]]:
            ann, message = await announcements.create(
                hub, req, publish=body.action == "publish", created_key_id=key.id
            )
            return 201, {"id": ann.id, "state": ann.state, "message_id": message.id if message else None}

        return await idempotent(hub, key, idempotency_key, body.model_dump(mode="json"), run)

    async def _own_announcement(hub: Hub, key: Any, announcement_id: int) -> Announcement:
        async with hub.db.session() as session:
            ann = await session.get(Announcement, announcement_id)
        # Another office's announcement answers as one that does not exist: nothing to learn from ids.
        if ann is None or not await _in_scope(hub, key, ann.office_id):
            raise HTTPException(404, f"announcement {announcement_id} not found")
        return ann

    @app.get("/v1/announcements/{announcement_id}", tags=["announcements"], responses=documented(*KEYED, 404))
    async def get_announcement(announcement_id: AnnouncementId, hub: HubDep, key: StaffKey) -> dict[str, Any]:
        """The announcement as stored; times in the office's zone with their offset."""
        ann = await _own_announcement(hub, key, announcement_id)
        return await announcements.read_back(hub, ann)

    @app.post(
        "/v1/announcements/{announcement_id}/publish",
        tags=["announcements"],
        responses=documented(*KEYED, 404, 409),
    )
    async def publish(announcement_id: AnnouncementId, hub: HubDep, key: StaffKey) -> dict[str, Any]:
        await _own_announcement(hub, key, announcement_id)
        message = await announcements.publish_announcement(hub, announcement_id)
        return {
            "id": announcement_id,
            "message_id": message.id,
            "state": message.state,
            "send_at": await announcements.send_time(hub, message),
        }

    @app.post(
        "/v1/announcements/{announcement_id}/cancel",
        tags=["announcements"],
        responses=documented(*KEYED, 404, 409),
    )
    async def cancel(announcement_id: AnnouncementId, hub: HubDep, key: StaffKey) -> dict[str, Any]:
        """Stop it: pending deliveries are skipped; what already went out stays out."""
        await _own_announcement(hub, key, announcement_id)
        skipped = await announcements.cancel(hub, announcement_id)
        return {"id": announcement_id, "state": "cancelled", "skipped": skipped}

    @app.post(
        "/v1/announcements/{announcement_id}/corrections",
        status_code=201,
        tags=["announcements"],
        responses=documented(*KEYED, 404, 409),
    )
    async def correction(
        announcement_id: AnnouncementId, body: CorrectionBody, hub: HubDep, key: StaffKey
    ) -> dict[str, Any]:
        """A correction reaches exactly those who received the original."""
        await _own_announcement(hub, key, announcement_id)
        fix = announcements.AnnouncementInput(**body.model_dump())
        ann, message = await announcements.correct(hub, announcement_id, fix)
        return {"id": ann.id, "corrects": announcement_id, "message_id": message.id}

    @app.get("/v1/messages/{message_id}", tags=["messages"], responses=documented(*KEYED, 404))
    async def message_status(message_id: MessageId, hub: HubDep, key: AnyKey) -> dict[str, Any]:
        """Counts per channel and delivery state; ``deferred``: what waits for another try, why, and when."""
        result = await delivery.status(hub, message_id)
        if result is None or (result["office_id"] and not await _in_scope(hub, key, result["office_id"])):
            raise HTTPException(404, f"message {message_id} not found")  # another office's: the same
        return result

    @app.get("/v1/subscribers", tags=["subscribers"], responses=documented(*KEYED))
    async def list_subscribers(
        hub: HubDep,
        key: StaffKey,
        topic: Annotated[str | None, Query(max_length=200)] = None,
        cursor: Annotated[str | None, Query(max_length=40)] = None,
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Subscriptions to this office's topics (and its subtree's), addresses masked.

        Keyset pages: pass ``next_cursor`` back as ``cursor`` until it is null; every row in scope comes
        exactly once, however the rows of other offices are interleaved.
        """
        limit = max(1, min(limit, 1000))
        start = _cursor(cursor) if cursor else after
        async with hub.db.session() as session:
            staff = await session.get(Office, key.office_id)
            offices = await offices_under(session, staff.region_code) if staff else []
            query = (
                select(
                    Subscription.id,
                    Topic.slug,
                    Subscription.state,
                    Endpoint.channel,
                    Endpoint.address,
                    Endpoint.active,
                )
                .join(Topic, Topic.id == Subscription.topic_id)
                .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
                .where(Subscription.id > start, Topic.office_id.in_(offices))
                .order_by(Subscription.id)
                .limit(limit + 1)
            )
            if topic:
                query = query.where(Topic.slug == topic)
            rows = (await session.execute(query)).all()
        more = len(rows) > limit
        items = [
            {
                "id": row.id,
                "topic": row.slug,
                "state": row.state,
                "channel": row.channel,
                "address": _mask(hub, row.channel, row.address),
                "active": row.active,
            }
            for row in rows[:limit]
        ]
        last = items[-1]["id"] if more else None
        return {"items": items, "next_cursor": str(last) if more else None, "next_after": last}

    # -- applicants (intake systems) --------------------------------------------------------------------

    @app.post("/v1/applicants", status_code=201, tags=["applicants"], responses=documented(*KEYED, 409))
    async def open_case(
        body: applicants.CaseInput,
        hub: HubDep,
        key: IntakeKey,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Open a case; returns the PIN and deep-link code to print on the applicant's receipt."""

        def answer(facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            case = facts["case"]
            links = {
                name: link
                for name, adapter in hub.channels.items()
                if (link := adapter.deep_link(case.link_code))
            }
            return 201, {
                "reference": case.reference,
                "pin": case.pin,
                "link_code": case.link_code,
                "links": links,
            }

        async def run(within: applicants.Within | None) -> tuple[int, dict[str, Any]]:
            case = await applicants.open_case(hub, key.office_id, body, within=within)
            return answer({"case": case})

        return await idempotent(hub, key, idempotency_key, body.model_dump(mode="json"), run, answer)

    @app.post(
        "/v1/applicants/{reference}/updates",
        status_code=202,
        tags=["applicants"],
        responses=documented(*KEYED, 404, 409),
    )
    async def case_update(
        reference: Annotated[str, Path(max_length=200)],
        body: applicants.UpdateInput,
        hub: HubDep,
        key: IntakeKey,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Record a status change; it goes to every endpoint linked to the case on the urgent lane.

        A reference of another office answers exactly as one that exists nowhere (404).
        """

        def answer(facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return 202, {"reference": reference, "status": body.status, "message_id": facts["message_id"]}

        async def run(within: applicants.Within | None) -> tuple[int, dict[str, Any]]:
            message_id = await applicants.post_update(hub, key.office_id, reference, body, within=within)
            return answer({"message_id": message_id})

        return await idempotent(
            hub, key, idempotency_key, {"ref": reference, **body.model_dump(mode="json")}, run, answer
        )

    # -- citizens: subscribe, confirm, unsubscribe --------------------------------------------------------

    @app.post(
        "/v1/subscriptions/email",
        status_code=202,
        tags=["subscriptions"],
        responses=documented(422, 429, 503),
    )
    async def subscribe_email(body: EmailSubscribe, request: Request, hub: HubDep) -> dict[str, Any]:
        """Start a double opt-in: the address receives a confirmation link; nothing else until confirmed.

        Public, so limited per client address (``hub.api.limits``): over the limit, 429 with
        ``Retry-After`` and the reason in the request's language.
        """
        await limits.email_subscribe(hub, limits.client(hub, request), body.locale)
        result = await subscriptions.subscribe(hub, body.topic, "email", body.email, locale=body.locale)
        return {"state": result.state, "message": _say(body.locale, "check_inbox")}

    @app.get(
        "/v1/confirm/{token}",
        response_class=HTMLResponse,
        tags=["subscriptions"],
        responses=documented(422, 503, html=True, _400=BAD_LINK, _410=LINK_GONE),
    )
    async def confirm(token: str, request: Request, hub: HubDep) -> Response:
        """The link in a confirmation email: confirms what it asked for, once, while it is fresh."""
        if not TOKEN.fullmatch(token):
            return _bad_link(request)
        try:
            await subscriptions.confirm(hub, token)
        except subscriptions.SubscriptionError as exc:
            return _bad_link(request, exc)
        return _page(_say("id", "confirmed"))

    @app.get(
        "/v1/unsubscribe/{token}",
        response_class=HTMLResponse,
        tags=["subscriptions"],
        responses=documented(422, html=True, _400=BAD_LINK),
    )
    async def unsubscribe_page(token: str, request: Request) -> Response:
        """A page with one button: link scanners that follow GET links unsubscribe no one."""
        if not TOKEN.fullmatch(token):
            return _bad_link(request)
        return _page(
            f'<form method="post"><p>{_say("id", "unsubscribe_q")}</p>'
            f'<button type="submit">{_say("id", "unsubscribe_btn")}</button></form>'
        )

    @app.post(
        "/v1/unsubscribe/{token}",
        response_class=HTMLResponse,
        tags=["subscriptions"],
        responses=documented(422, 503, html=True, _400=BAD_LINK, _410=LINK_GONE),
    )
    async def unsubscribe(token: str, request: Request, hub: HubDep) -> Response:
        """RFC 8058 one-click unsubscribe (``List-Unsubscribe=One-Click``), honoured at once."""
        if not TOKEN.fullmatch(token):
            return _bad_link(request)
        try:
            await subscriptions.unsubscribe_link(hub, token)
        except subscriptions.SubscriptionError as exc:
            return _bad_link(request, exc)
        return _page(_say("id", "unsubscribed"))

    @app.get("/v1/stats", tags=["ops"], responses=documented(*KEYED))
    async def stats(hub: HubDep, key: StaffKey) -> dict[str, Any]:
        async with hub.db.session() as session:
            rows = await session.execute(
                select(Endpoint.channel, func.count()).where(Endpoint.active).group_by(Endpoint.channel)
            )
        return {"active_endpoints": dict(rows.all())}


def _webhooks(app: FastAPI) -> None:
    """Providers' callbacks: each adapter checks its own secret (``WebhookRejected`` answers 403)."""

    @app.post(
        "/v1/channels/{channel}/webhook", tags=["channels"], responses=documented(400, 403, 404, 422, 503)
    )
    @app.get("/v1/channels/{channel}/webhook", tags=["channels"], include_in_schema=False)
    async def webhook(channel: str, request: Request, hub: HubDep) -> Response:
        if channel not in hub.channels:
            raise HTTPException(404, f"channel {channel!r} is not enabled")
        if not hub.channels[channel].capabilities.webhooks:
            # Decided before opening anything: opening a Matrix adapter here would log in to the
            # workers' device and take it over.
            raise HTTPException(404, f"channel {channel!r} takes no webhooks")
        incoming = WebhookRequest(
            headers=dict(request.headers), query=dict(request.query_params), body=await request.body()
        )
        try:
            adapter = await hub.open_channel(channel, "urgent")
        except ChannelNotHere:
            raise HTTPException(404, f"channel {channel!r} takes no webhooks in an API process") from None
        try:
            records, reply = await adapter.handle_webhook(incoming)
        except WebhookRejected as exc:
            raise HTTPException(403, str(exc) or "webhook not authentic") from None
        except NotImplementedError as exc:
            raise HTTPException(404, str(exc)) from None
        except (ValueError, LookupError, TypeError) as exc:
            # Input the adapter could not read (a provider's, or a forger's): a 400, not a 500 the
            # provider would retry. Only the kind is logged: the request may carry personal data.
            log.warning("webhook_unreadable", channel=channel, error=type(exc).__name__)
            raise HTTPException(400, f"the {channel} webhook request could not be read") from None
        for record in records:
            await handle_inbound(hub, record)
        if reply.status >= 400:
            return JSONResponse({"error": reply.body or "webhook refused"}, status_code=reply.status)
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type)


def _cursor(value: str) -> int:
    try:
        cursor = int(value)
    except ValueError:
        cursor = -1
    if not 0 <= cursor <= MAX_ID:
        raise InvalidInput(f"cursor: {value!r} is not a cursor this API returned")
    return cursor


def _mask(hub: Hub, channel: str, address: str) -> str:
    return mask(address, hub.channels.get(channel))


_TEXT = {
    "id": {
        "check_inbox": "Periksa kotak masuk Anda dan buka tautan konfirmasi.",
        "confirmed": "Terima kasih. Langganan Anda sudah dikonfirmasi.",
        "unsubscribed": (
            "Anda sudah berhenti berlangganan. Anda tidak akan menerima pesan lagi dari topik ini."
        ),
        "unsubscribe_q": "Berhenti berlangganan informasi ini?",
        "unsubscribe_btn": "Ya, berhenti berlangganan",
        "bad_link": "Tautan ini tidak valid atau sudah tidak berlaku.",
    },
    "en": {
        "check_inbox": "Check your inbox and open the confirmation link.",
        "confirmed": "Thank you. Your subscription is confirmed.",
        "unsubscribed": "You have unsubscribed and will receive no more messages on this topic.",
        "unsubscribe_q": "Unsubscribe from these updates?",
        "unsubscribe_btn": "Yes, unsubscribe",
        "bad_link": "This link is not valid or has expired.",
    },
}


def _say(locale: str, key: str) -> str:
    return _TEXT.get(locale, _TEXT["id"])[key]


def _link_answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": errors.ErrorBody.model_json_schema()},
        },
    }


#: An unusable link answers a page, or ``{"error": ...}`` to a client that asks for JSON.
BAD_LINK = _link_answer("The link is not a link this hub made")
LINK_GONE = _link_answer("A genuine link that expired, or was made before a later change; it did nothing")


def _bad_link(request: Request, exc: Exception | None = None) -> Response:
    """400 for a link that is not one (the citizen's text), 410 for one that expired or was superseded
    (the page the error carries as ``html``, saying what to do). A page unless the client asks for JSON
    (``Accept: application/json`` without ``text/html``): a browser, a mail client's one-click POST and
    curl all get the page."""
    page = getattr(exc, "html", None)
    status = 410 if page else 400
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return JSONResponse({"error": str(exc) if page else _say("id", "bad_link")}, status_code=status)
    return _page(page or _say("id", "bad_link"), status=status)


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!DOCTYPE html><html lang="id"><head><meta charset="utf-8"><title>Disdukcapil</title></head>'
        '<body style="font-family: Arial, sans-serif; max-width: 560px; margin: 40px auto;">'
        f"{body}</body></html>",
        status_code=status,
    )
