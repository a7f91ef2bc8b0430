"""Issues 9 and 10, standing check: every route is authenticated, or listed here with its reason.

A new API route without ``StaffKey`` / ``IntakeKey`` / ``AnyKey`` fails this test until it is added to
``PUBLIC`` with the secret it checks (a signed link token, a channel's webhook secret) or the reason it
needs none. Public routes that change state are then tried with a forged secret: refused, nothing done.
A console route (under ``/console``) needs a ``need(...)`` dependency (a signed-in user with a role),
or a place in ``CONSOLE_PUBLIC`` with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.routing import BaseRoute, Mount, Route

from hub import subscriptions
from hub.api.app import create_app
from hub.api.deps import api_key
from hub.store.models import Subscription

#: (method, path) -> why it is public. Methods as the app declares them; HEAD follows GET.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "read-only liveness for load balancers; says ok and channel names",
    ("GET", "/readyz"): "read-only readiness: ok/down for the database, Redis and migrations, no detail kept",
    ("GET", "/metrics"): "read-only Prometheus counts by channel and lane; no address, no content",
    ("GET", "/openapi.json"): "read-only API description",
    ("GET", "/docs"): "read-only API documentation page",
    ("GET", "/docs/oauth2-redirect"): "static page of the documentation UI",
    ("GET", "/redoc"): "read-only API documentation page",
    ("POST", "/v1/subscriptions/email"): (
        "the public form: changes nothing until the address confirms (double opt-in); "
        "limited per client address in Redis"
    ),
    ("GET", "/v1/confirm/{token}"): "secret: the signed link token from the confirmation email",
    ("GET", "/v1/unsubscribe/{token}"): "read-only: shows a button (link scanners unsubscribe no one)",
    ("POST", "/v1/unsubscribe/{token}"): "secret: the signed link token from the email (RFC 8058)",
    ("POST", "/v1/channels/{channel}/webhook"): "secret: each adapter checks its channel's webhook secret",
    ("GET", "/v1/channels/{channel}/webhook"): (
        "changes state (SMS gateways call back by GET); secret: the adapter checks its channel's secret"
    ),
    # Issue 11, kelurahan relays (hub/api/relays.py): an email relay's confirm link.
    ("GET", "/v1/relays/ack/{token}"): "read-only: shows the choices and a button (scanners confirm nothing)",
    ("POST", "/v1/relays/ack/{token}"): "secret: the signed link token from the relay's email; acks once",
    # Issue 11, feeds and CAP (hub/public/feeds.py, cap.py): read-only copies of what is already public.
    ("GET", "/kantor/{office}/feed.atom"): "read-only public feed: published announcements and status",
    ("GET", "/kantor/{office}/feed.json"): "read-only public feed: published announcements and status",
    ("GET", "/wilayah/{region}/feed.atom"): "read-only public feed of a region's published announcements",
    ("GET", "/wilayah/{region}/feed.json"): "read-only public feed of a region's published announcements",
    ("GET", "/kantor/{office}/cap/{announcement}.xml"): "read-only CAP document of a published announcement",
    ("GET", "/kantor/{office}/cap.atom"): "read-only index of the office's CAP alerts in force",
    # Issue 11, public pages (hub/public/pages.py): what anyone may read, and the email form.
    ("GET", "/kantor"): "read-only index of regions and offices",
    ("GET", "/kantor/{office}"): "read-only office page: status, announcements in force, ways to subscribe",
    ("GET", "/kantor/{office}/pengumuman/{id}"): "read-only page of a published or cancelled announcement",
    ("GET", "/kantor/{office}/qr/{what}.svg"): "read-only QR images of the public subscribe links",
    # Issue 11, printable notices (hub/public/notices.py): PDFs of what the pages above show.
    ("GET", "/kantor/{office}/cetak.pdf"): "read-only printable notice of the office's status",
    ("GET", "/kantor/{office}/pengumuman/{id}/cetak.pdf"): "read-only printable notice of a public one",
    ("POST", "/kantor/{office}/langganan"): (
        "the public email form: changes nothing until the address confirms (double opt-in); "
        "limited per client address in Redis, like POST /v1/subscriptions/email"
    ),
}

#: Console routes anyone may reach, and why (everything else under /console needs ``need(...)``).
CONSOLE_PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/console/masuk"): "the sign-in form",
    ("POST", "/console/masuk"): "checks a password; CSRF-checked, limited per client and account, lock-out",
    ("GET", "/console/masuk/kode"): "the TOTP step, only for a browser whose password was just accepted",
    ("POST", "/console/masuk/kode"): "checks a TOTP code of such a browser; CSRF-checked, limited, lock-out",
    ("GET", "/console/static/{name}"): "the stylesheet and scripts: the same for everyone, no data",
    ("GET", "/console/{rest:path}"): "the console's 404 page for any other path: says nothing more",
}

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _routes() -> Iterator[tuple[str, str, Route]]:
    yield from _walk(create_app().routes, "")


def _walk(routes: list[BaseRoute], prefix: str) -> Iterator[tuple[str, str, Route]]:
    """Every endpoint, inside included routers (FastAPI keeps those as one entry) and mounts too."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, prefix + route.path, route
        else:
            raise AssertionError(f"a route this audit cannot read: {route!r}")


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call is api_key or _needs_key(d) for d in dependant.dependencies)


def _console_role(dependant: Dependant) -> object | None:
    """The role a route's ``need(...)`` dependency asks for, if it has one."""
    for d in dependant.dependencies:
        role = getattr(d.call, "console_role", None) or _console_role(d)
        if role is not None:
            return role
    return None


def _api_routes() -> Iterator[tuple[str, str, Route]]:
    return ((m, p, r) for m, p, r in _routes() if not p.startswith("/console"))


def test_every_route_needs_a_key_or_is_listed_with_its_reason():
    unlisted, stale = [], set(PUBLIC)
    for method, path, route in _api_routes():
        keyed = isinstance(route, APIRoute) and _needs_key(route.dependant)
        stale.discard((method, path))
        if keyed:
            assert (method, path) not in PUBLIC, f"{method} {path} needs a key: remove it from PUBLIC"
        elif (method, path) not in PUBLIC:
            unlisted.append(f"{method} {path}")
    assert unlisted == [], "public routes not in PUBLIC (add an API key or a reason)"
    assert stale == set(), "PUBLIC lists routes the app no longer has"


def test_state_changing_routes_are_all_keyed_except_the_listed_ones():
    public_writes = sorted(
        f"{method} {path}"
        for method, path, route in _api_routes()
        if method in STATE_CHANGING and not (isinstance(route, APIRoute) and _needs_key(route.dependant))
    )
    assert public_writes == [
        "POST /kantor/{office}/langganan",
        "POST /v1/channels/{channel}/webhook",
        "POST /v1/relays/ack/{token}",
        "POST /v1/subscriptions/email",
        "POST /v1/unsubscribe/{token}",
    ]


def test_every_console_route_needs_a_role_or_is_listed_with_its_reason():
    unchecked, stale, seen = [], set(CONSOLE_PUBLIC), 0
    for method, path, route in _routes():
        if not path.startswith("/console"):
            continue
        seen += 1
        stale.discard((method, path))
        role = _console_role(route.dependant) if isinstance(route, APIRoute) else None
        if role is not None:
            assert (method, path) not in CONSOLE_PUBLIC, (
                f"{method} {path} needs a role: remove it from the list"
            )
        elif (method, path) not in CONSOLE_PUBLIC:
            unchecked.append(f"{method} {path}")
    assert seen > len(CONSOLE_PUBLIC), "the console's routes were not found"
    assert unchecked == [], "console routes without need(...) (add it, or a reason to CONSOLE_PUBLIC)"
    assert stale == set(), "CONSOLE_PUBLIC lists routes the console no longer has"


def test_console_role_check_is_found_through_sub_dependencies():
    """The audit would catch a route that lost its check: one without ``need`` has no role."""
    from fastapi import Depends, FastAPI, Request

    from hub.console.auth import Role, need

    app = FastAPI()

    async def via(request: Request, staff=Depends(need(Role.EDITOR))) -> object:
        return staff

    @app.get("/checked")
    async def checked(user=Depends(via)) -> None: ...

    @app.get("/unchecked")
    async def unchecked(request: Request) -> None: ...

    roles = {
        route.path: _console_role(route.dependant) for route in app.routes if isinstance(route, APIRoute)
    }
    assert roles == {"/checked": Role.EDITOR, "/unchecked": None}


async def test_public_routes_that_change_state_refuse_a_forged_secret(hub):
    """A forged link token confirms and unsubscribes no one (webhook secrets: each channel's tests)."""
    await subscriptions.subscribe(hub, "kota-serang", "email", "warga@mail.example.com")
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", "tetap@mail.example.com", confirmed=True)
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api:
        forged = "1.1.t0.AAAAAAAAAAAAAAAAAAAAAA"
        assert (await api.get(f"/v1/confirm/{forged}")).status_code == 400
        assert (await api.post(f"/v1/unsubscribe/{forged}")).status_code == 400
        assert (await api.post(f"/v1/relays/ack/{forged}", data={"means": "mosque"})).status_code == 400
    async with hub.db.session() as session:
        states = sorted((await session.execute(select(Subscription.state))).scalars())
    assert states == ["confirmed", "pending"]
