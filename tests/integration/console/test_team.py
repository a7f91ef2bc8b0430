"""Admins' pages: team changes, roles over the region tree, another office's ids, XSS, the audit log."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from hub.console import accounts
from hub.store.models import AuditEntry, StaffSession, StaffUser
from tests.console import csrf_of, make_staff, post_form, sign_in, user_row
from tests.integration.console.conftest import sqlite_only

database = pytest.fixture(sqlite_only)

PASSWORD = "kata-sandi-rahasia-1"
SCRIPT = "<script>alert(1)</script>"


async def _admin(hub, client, office: str = "banten-provinsi") -> None:
    _, secret = await make_staff(hub, f"admin@{office}.example.go.id", "admin", office, PASSWORD)
    assert (await sign_in(client, f"admin@{office}.example.go.id", PASSWORD, secret)).status_code == 303


async def test_roles_are_enforced_page_by_page(hub, client):
    await make_staff(hub, "viewer@serang.example.go.id", "viewer", "kota-serang", PASSWORD)
    await sign_in(client, "viewer@serang.example.go.id", PASSWORD)
    assert (await client.get("/console/")).status_code == 200
    for path in ("/console/tim", "/console/tim/baru", "/console/audit", "/console/audit.csv"):
        refused = await client.get(path)
        assert refused.status_code == 403, path
        assert "Tidak diizinkan" in refused.text
    page = await client.get("/console/")
    posted = await client.post(
        "/console/tim/baru",
        data={"csrf": csrf_of(page.text), "name": "X", "email": "x@example.go.id", "office": "kota-serang"},
    )
    assert posted.status_code == 403
    async with hub.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StaffUser)) == 1


async def test_an_admin_without_totp_must_enrol_it_first(hub, client):
    import pyotp

    await make_staff(hub, "admin@serang.example.go.id", "admin", "kota-serang", PASSWORD, totp=False)
    await sign_in(client, "admin@serang.example.go.id", PASSWORD)
    assert (await client.get("/console/tim")).headers["location"] == "/console/akun/totp"
    page = await client.get("/console/akun/totp")
    assert "<svg" in page.text and "otpauth://totp/" in page.text
    secret = page.text.split('id="totp-secret">')[1].split("<")[0].replace(" ", "")
    wrong = await post_form(client, "/console/akun/totp", {"code": "000000"}, page=page.text)
    assert wrong.status_code == 400
    done = await post_form(client, "/console/akun/totp", {"code": pyotp.TOTP(secret).now()}, page=page.text)
    assert done.status_code == 303
    assert (await client.get("/console/tim")).status_code == 200
    user = await user_row(hub, "admin@serang.example.go.id")
    assert user.totp_sealed and secret not in user.totp_sealed
    assert accounts.unseal_totp(hub.verification_keys, user.id, user.totp_sealed) == secret


async def test_admin_creates_a_user_who_signs_in_with_the_one_time_password(hub, client, other_client):
    await _admin(hub, client, "kota-serang")
    form = await client.get("/console/tim/baru")
    created = await post_form(
        client,
        "/console/tim/baru",
        {"name": "Siti", "email": "Siti@Serang.example.go.id", "office": "kota-serang", "role": "editor"},
        page=form.text,
    )
    assert created.status_code == 200
    password = created.text.split('id="one-time-password">')[1].split("<")[0]
    assert len(password) == 16
    user = await user_row(hub, "siti@serang.example.go.id")
    assert (user.role, user.must_change_password) == ("editor", True)
    assert password not in user.password_hash
    assert (await sign_in(other_client, "siti@serang.example.go.id", password)).status_code == 303
    assert (await other_client.get("/console/")).headers["location"] == "/console/akun/sandi"
    # The same email again: the form comes back with the error beside the field, nothing created.
    again = await post_form(
        client,
        "/console/tim/baru",
        {"name": "Siti 2", "email": "siti@serang.example.go.id", "office": "kota-serang", "role": "viewer"},
        page=form.text,
    )
    assert again.status_code == 400
    assert "Email ini sudah dipakai akun lain." in again.text
    async with hub.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StaffUser)) == 2


async def test_a_kota_admin_cannot_create_users_elsewhere_or_see_them(hub, client):
    await _admin(hub, client, "kota-serang")
    other_id, _ = await make_staff(hub, "pekalongan@example.go.id", "editor", "kota-pekalongan", PASSWORD)
    form = await client.get("/console/tim/baru")
    assert "kota-pekalongan" not in form.text and "banten-provinsi" not in form.text
    refused = await post_form(
        client,
        "/console/tim/baru",
        {"name": "X", "email": "x@example.go.id", "office": "kota-pekalongan", "role": "admin"},
        page=form.text,
    )
    assert refused.status_code == 400
    assert "Pilih kantor di wilayah Anda." in refused.text
    assert "pekalongan@example.go.id" not in (await client.get("/console/tim")).text
    # Another office's user id in a URL: the same clear 404 page as an id that does not exist.
    for path in (f"/console/tim/{other_id}", "/console/tim/999999", "/console/tim/abc"):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert "Halaman tidak ditemukan" in missing.text and "Traceback" not in missing.text
    for action in ("peran", "reset", "aktif"):
        posted = await post_form(
            client, f"/console/tim/{other_id}/{action}", {"role": "viewer", "active": "0"}, page=form.text
        )
        assert posted.status_code == 404
    other = await user_row(hub, "pekalongan@example.go.id")
    assert (other.role, other.active, other.must_change_password) == ("editor", True, False)


async def test_a_province_admin_manages_the_kota_below(hub, client, other_client):
    await _admin(hub, client, "banten-provinsi")
    user_id, _ = await make_staff(hub, "editor@serang.example.go.id", "editor", "kota-serang", PASSWORD)
    await sign_in(other_client, "editor@serang.example.go.id", PASSWORD)
    assert (await other_client.get("/console/")).status_code == 200
    page = await client.get(f"/console/tim/{user_id}")
    assert page.status_code == 200
    role = await post_form(client, f"/console/tim/{user_id}/peran", {"role": "approver"}, page=page.text)
    assert role.headers["location"] == f"/console/tim/{user_id}?ok=role_changed"
    reset = await post_form(client, f"/console/tim/{user_id}/reset", {}, page=page.text)
    password = reset.text.split('id="one-time-password">')[1].split("<")[0]
    # The reset ended the user's session; the old password is gone, the one-time one works.
    assert (await other_client.get("/console/")).status_code == 303
    assert (await sign_in(other_client, "editor@serang.example.go.id", PASSWORD)).status_code == 401
    assert (await sign_in(other_client, "editor@serang.example.go.id", password)).status_code == 303
    off = await post_form(client, f"/console/tim/{user_id}/aktif", {"active": "0"}, page=page.text)
    assert off.status_code == 303
    assert (await other_client.get("/console/akun/sandi")).status_code == 303
    assert (await sign_in(other_client, "editor@serang.example.go.id", password)).status_code == 401
    async with hub.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(StaffSession)) == 1  # the admin's
        actions = list((await session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars())
    assert actions == [
        "signin",
        "signin",
        "user.role",
        "user.reset_password",
        "signin.failed",
        "signin",
        "user.deactivate",
        "signin.failed",
    ]


async def test_an_admin_cannot_demote_or_deactivate_themselves(hub, client):
    await _admin(hub, client, "kota-serang")
    me = await user_row(hub, "admin@kota-serang.example.go.id")
    page = await client.get(f"/console/tim/{me.id}")
    for action, data in (("peran", {"role": "viewer"}), ("aktif", {"active": "0"})):
        refused = await post_form(client, f"/console/tim/{me.id}/{action}", data, page=page.text)
        assert refused.status_code == 400
        assert "akun Anda sendiri" in refused.text
    assert (await user_row(hub, "admin@kota-serang.example.go.id")).role == "admin"


async def test_script_in_a_name_is_shown_as_text_everywhere(hub, client):
    await _admin(hub, client, "kota-serang")
    form = await client.get("/console/tim/baru")
    created = await post_form(
        client,
        "/console/tim/baru",
        {"name": SCRIPT, "email": "xss@serang.example.go.id", "office": "kota-serang", "role": "viewer"},
        page=form.text,
    )
    user = await user_row(hub, "xss@serang.example.go.id")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for page in (created, await client.get("/console/tim"), await client.get(f"/console/tim/{user.id}")):
        assert SCRIPT not in page.text
        assert escaped in page.text
    # A script as an email is refused, and shown back escaped in the form.
    bad = await post_form(
        client,
        "/console/tim/baru",
        {"name": "x", "email": SCRIPT, "office": "kota-serang", "role": "viewer"},
        page=form.text,
    )
    assert bad.status_code == 400 and SCRIPT not in bad.text and escaped in bad.text


async def test_audit_log_lists_the_subtree_newest_first_and_exports_csv(hub, client, other_client):
    await _admin(hub, client, "kota-serang")
    await make_staff(hub, "pekalongan@example.go.id", "editor", "kota-pekalongan", PASSWORD)
    await sign_in(other_client, "nobody@example.go.id", "wrong-password")
    await sign_in(other_client, "pekalongan@example.go.id", PASSWORD)
    page = await client.get("/console/audit")
    assert page.status_code == 200
    assert page.text.count("<tr>") == 1 + 1  # header + the admin's own sign-in; Pekalongan's is not ours
    assert "admin@kota-serang.example.go.id" in page.text and "WIB" in page.text
    export = await client.get("/console/audit.csv")
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == ["id", "at_utc", "staff_id", "staff_email", "office_id", "action", "target", "detail"]
    assert [(r[3], r[4], r[5], r[7]) for r in rows[1:]] == [
        ("admin@kota-serang.example.go.id", "kota-serang", "signin", '{"factor": "totp"}')
    ]
    async with hub.db.session() as session:
        last = await session.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()))
    assert (last.action, last.detail) == ("audit.export", {"rows": 1})


async def test_language_switch_is_remembered(hub, client):
    english = await client.get("/console/masuk?lang=en")
    assert "<h1>Sign in</h1>" in english.text and 'lang="en"' in english.text
    assert "<h1>Sign in</h1>" in (await client.get("/console/masuk")).text
    back = await client.get("/console/masuk?lang=id")
    assert "<h1>Masuk</h1>" in back.text


async def test_every_console_page_answers_without_a_server_error(hub, client, other_client):
    """Each GET page without path parameters, for an admin and for a viewer: a page, never a 500."""
    from fastapi.routing import APIRoute

    from tests.integration.test_route_audit import _routes

    await _admin(hub, client, "banten-provinsi")
    await make_staff(hub, "viewer@serang.example.go.id", "viewer", "kota-serang", PASSWORD)
    await sign_in(other_client, "viewer@serang.example.go.id", PASSWORD)
    paths = sorted(
        path
        for method, path, route in _routes()
        if method == "GET" and path.startswith("/console") and "{" not in path and isinstance(route, APIRoute)
    )
    assert {"/console/", "/console/masuk", "/console/tim", "/console/audit"} <= set(paths)
    answers = {}
    for http, who in ((client, "admin"), (other_client, "viewer")):
        for path in paths:
            answer = await http.get(path)
            answers[(who, path)] = answer.status_code
    assert [key for key, status in answers.items() if status >= 500] == []
    assert answers[("viewer", "/console/tim")] == 403 and answers[("admin", "/console/tim")] == 200
