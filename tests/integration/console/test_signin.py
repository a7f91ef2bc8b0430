"""Signing in and out of the console: passwords, TOTP, lock-out, rate limits, sessions, CSRF."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import select

from hub.api.app import create_app
from hub.clock import utcnow
from hub.console import accounts, sessions
from hub.console.pages import signin as signin_page
from hub.store.models import AuditEntry, StaffSession, StaffUser
from tests.console import csrf_of, make_staff, post_form, sign_in, user_row

PASSWORD = "kata-sandi-rahasia-1"


async def _audit(hub) -> list[tuple[str, str, dict]]:
    async with hub.db.session() as session:
        rows = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()
        return [(row.action, row.staff_email, row.detail) for row in rows]


async def test_sign_in_without_totp_reaches_the_dashboard_and_is_audited(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    response = await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    assert (response.status_code, response.headers["location"]) == (303, "/console/")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    dashboard = await client.get("/console/")
    assert dashboard.status_code == 200
    assert "editor · Penyusun · kota-serang" in dashboard.text
    assert await _audit(hub) == [("signin", "editor@serang.example.go.id", {"factor": "password"})]


async def test_sign_in_with_totp_needs_the_code(hub, client):
    _, secret = await make_staff(hub, "admin@serang.example.go.id", "admin", "kota-serang", PASSWORD)
    form = await client.get("/console/masuk")
    first = await client.post(
        "/console/masuk",
        data={"csrf": csrf_of(form.text), "email": "admin@serang.example.go.id", "password": PASSWORD},
    )
    assert (first.status_code, first.headers["location"]) == (303, "/console/masuk/kode?next=%2Fconsole%2F")
    # Password alone is not a session: the dashboard still sends the browser to sign in.
    assert (await client.get("/console/")).status_code == 303
    code_page = await client.get("/console/masuk/kode")
    wrong = await client.post("/console/masuk/kode", data={"csrf": csrf_of(code_page.text), "code": "000000"})
    assert wrong.status_code == 401
    assert "Kode salah atau sudah dipakai" in wrong.text
    right = await client.post(
        "/console/masuk/kode", data={"csrf": csrf_of(code_page.text), "code": pyotp.TOTP(secret).now()}
    )
    assert (right.status_code, right.headers["location"]) == (303, "/console/")
    assert (await client.get("/console/")).status_code == 200
    actions = [(action, detail) for action, _, detail in await _audit(hub)]
    assert actions == [("signin.failed", {"factor": "totp"}), ("signin", {"factor": "totp"})]


async def test_a_totp_code_is_good_once(hub, client, other_client):
    _, secret = await make_staff(hub, "admin@serang.example.go.id", "admin", "kota-serang", PASSWORD)
    code = pyotp.TOTP(secret).now()
    for http, expected in ((client, 303), (other_client, 401)):
        await post_form(http, "/console/masuk", {"email": "admin@serang.example.go.id", "password": PASSWORD})
        answer = await post_form(http, "/console/masuk/kode", {"code": code})
        assert answer.status_code == expected


async def test_wrong_password_is_refused_without_saying_which_part_was_wrong(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    wrong = await sign_in(client, "editor@serang.example.go.id", "salah-sekali-123")
    unknown = await sign_in(client, "siapa@serang.example.go.id", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Email atau kata sandi salah" in wrong.text
    assert wrong.text.replace("editor@", "siapa@") == unknown.text.replace(
        csrf_of(unknown.text), csrf_of(wrong.text)
    )
    assert (await client.get("/console/")).status_code == 303
    log = await _audit(hub)
    assert log == [
        ("signin.failed", "editor@serang.example.go.id", {"factor": "password"}),
        ("signin.failed", "siapa@serang.example.go.id", {"factor": "password"}),
    ]
    assert all("salah-sekali" not in str(entry) and PASSWORD not in str(entry) for entry in log)


async def test_five_failures_lock_the_account_for_fifteen_minutes(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    for _ in range(accounts.MAX_FAILURES):
        assert (await sign_in(client, "editor@serang.example.go.id", "salah-sekali-123")).status_code == 401
    user = await user_row(hub, "editor@serang.example.go.id")
    assert user.locked_until is not None
    assert timedelta(minutes=14) < user.locked_until - utcnow() <= timedelta(minutes=accounts.LOCK_MINUTES)
    # The right password changes nothing while locked.
    locked = await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    assert locked.status_code == 401
    assert (await _audit(hub))[-1][0] == "signin.locked"
    # Once the lock has passed, the right password works again.
    async with hub.db.transaction() as session:
        row = await session.get(StaffUser, user.id)
        row.locked_until = utcnow() - timedelta(seconds=1)
    assert (await sign_in(client, "editor@serang.example.go.id", PASSWORD)).status_code == 303


async def test_attempts_per_account_are_limited_in_redis(hub, client, other_client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    for attempt in range(signin_page.SIGNIN_PER_ACCOUNT):
        http = client if attempt % 2 else other_client
        # Different passwords, and an admin unlocking in between, still count per account.
        await sign_in(http, "editor@serang.example.go.id", f"salah-{attempt}-xxxxxxxx")
        async with hub.db.transaction() as session:
            row = await session.scalar(select(StaffUser))
            row.locked_until, row.failed_logins = None, 0
    refused = await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    assert refused.status_code == 429
    assert "Terlalu banyak percobaan masuk" in refused.text


async def test_session_id_changes_at_sign_in(hub, client):
    """Session fixation: the cookie a browser had before signing in is worth nothing after."""
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    await client.get("/console/masuk")
    before = client.cookies.get(sessions.COOKIE)
    assert before
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    after = client.cookies.get(sessions.COOKIE)
    assert after and after != before
    assert (await client.get("/console/")).status_code == 200
    client.cookies.clear()
    client.cookies.set(sessions.COOKIE, before, domain="hub.test", path="/console")
    assert (await client.get("/console/")).status_code == 303


async def test_sign_out_ends_the_session_for_good(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    cookie = client.cookies.get(sessions.COOKIE)
    dashboard = await client.get("/console/")
    out = await client.post("/console/keluar", data={"csrf": csrf_of(dashboard.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/console/masuk?keluar=1")
    assert (await client.get("/console/")).status_code == 303
    # The old cookie, replayed, opens nothing: its row is gone.
    client.cookies.clear()
    client.cookies.set(sessions.COOKIE, cookie, domain="hub.test", path="/console")
    assert (await client.get("/console/")).status_code == 303
    async with hub.db.session() as session:
        assert (await session.execute(select(StaffSession))).all() == []
    assert [action for action, _, _ in await _audit(hub)] == ["signin", "signout"]


async def test_absent_forged_or_expired_sessions_redirect_to_sign_in(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    absent = await client.get("/console/tim?x=1")
    assert (absent.status_code, absent.headers["location"]) == (
        303,
        "/console/masuk?next=%2Fconsole%2Ftim%3Fx%3D1",
    )
    client.cookies.set(
        sessions.COOKIE, "forged.t0.AAAAAAAAAAAAAAAAAAAAAA", domain="hub.test", path="/console"
    )
    assert (await client.get("/console/")).status_code == 303
    client.cookies.clear()
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    assert (await client.get("/console/")).status_code == 200
    async with hub.db.transaction() as session:
        row = await session.scalar(select(StaffSession))
        row.seen_at = utcnow() - sessions.IDLE - timedelta(seconds=1)
    assert (await client.get("/console/")).headers["location"] == "/console/masuk?next=%2Fconsole%2F"


async def test_csrf_missing_or_stale_is_refused_and_changes_nothing(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    form = await client.get("/console/masuk")
    stale = csrf_of(form.text)
    missing = await client.post(
        "/console/masuk", data={"email": "editor@serang.example.go.id", "password": PASSWORD}
    )
    assert missing.status_code == 403
    assert "Formulir kedaluwarsa" in missing.text
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    # The token of the form shown before signing in is stale now: sign-out refused, still signed in.
    refused = await client.post("/console/keluar", data={"csrf": stale})
    assert refused.status_code == 403
    assert (await client.get("/console/")).status_code == 200
    assert [action for action, _, _ in await _audit(hub)] == ["signin"]


async def test_one_time_password_must_be_changed_first(hub, client):
    await make_staff(
        hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD, must_change_password=True
    )
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    assert (await client.get("/console/")).headers["location"] == "/console/akun/sandi"
    page = await client.get("/console/akun/sandi")
    short = await client.post(
        "/console/akun/sandi",
        data={"csrf": csrf_of(page.text), "current": PASSWORD, "new": "pendek", "repeat": "pendek"},
    )
    assert short.status_code == 400
    assert "minimal 10 karakter" in short.text
    new = "sandi-baru-yang-panjang"
    done = await client.post(
        "/console/akun/sandi",
        data={"csrf": csrf_of(page.text), "current": PASSWORD, "new": new, "repeat": new},
    )
    assert done.status_code == 303
    assert (await client.get("/console/")).status_code == 200
    user = await user_row(hub, "editor@serang.example.go.id")
    assert not user.must_change_password and accounts.password_matches(user, new)


async def test_over_https_the_cookie_is_secure(hub):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://hub.test") as https:
        response = await sign_in(https, "editor@serang.example.go.id", PASSWORD)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


async def test_after_sign_in_only_console_pages_are_followed(hub, client):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    for target, landing in (
        ("/console/akun", "/console/akun"),
        ("//evil.example/console", "/console/"),
        ("https://evil.example/", "/console/"),
        ("/console\\@evil.example", "/console/"),
    ):
        client.cookies.clear()
        form = await client.get("/console/masuk")
        response = await client.post(
            "/console/masuk",
            data={
                "csrf": csrf_of(form.text),
                "email": "editor@serang.example.go.id",
                "password": PASSWORD,
                "next": target,
            },
        )
        assert response.headers["location"] == landing, target


async def test_pages_are_not_cached_or_framed_and_the_audit_log_cannot_be_edited(hub, client):
    page = await client.get("/console/masuk")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    await sign_in(client, "editor@serang.example.go.id", PASSWORD)
    for change in ("edit", "delete"):
        with pytest.raises(PermissionError, match="append-only"):
            async with hub.db.transaction() as session:
                entry = await session.scalar(select(AuditEntry))
                if change == "edit":
                    entry.action = "nothing"
                else:
                    await session.delete(entry)
    assert await _audit(hub) == [("signin", "editor@serang.example.go.id", {"factor": "password"})]


async def test_unknown_console_paths_get_the_console_404_page(client):
    missing = await client.get("/console/tidak/ada")
    assert missing.status_code == 404
    assert "<h1>Halaman tidak ditemukan</h1>" in missing.text
    css = await client.get("/console/static/console.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


async def test_racing_attempts_each_count_and_a_code_signs_in_once(hub):
    await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    wrong = await asyncio.gather(
        *(accounts.check_password(hub, "editor@serang.example.go.id", f"salah-{n}-xxxx") for n in range(4))
    )
    assert [a.outcome for a in wrong] == ["wrong"] * 4
    assert (await user_row(hub, "editor@serang.example.go.id")).failed_logins == 4
    user_id, secret = await make_staff(hub, "admin@serang.example.go.id", "admin", "kota-serang", PASSWORD)
    code = pyotp.TOTP(secret).now()
    outcomes = await asyncio.gather(*(accounts.check_totp(hub, user_id, code) for _ in range(5)))
    assert sorted(a.outcome for a in outcomes) == ["ok", "wrong", "wrong", "wrong", "wrong"]
