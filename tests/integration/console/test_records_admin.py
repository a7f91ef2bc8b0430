"""API keys and kelurahan relays in the console: admins only, scoped, CSRF-checked, audited, shown once."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import func, select

from hub import keys
from hub.store.models import ApiKey, AuditEntry, Endpoint, KeyValue, Subscriber, Subscription, Topic
from tests.console import csrf_of, make_staff, sign_in
from tests.integration.console.conftest import sqlite_only

database = pytest.fixture(sqlite_only)

PASSWORD = "sandi-rahasia-panjang"
SCRIPT = "<script>alert(1)</script>"


async def _as(hub, client: httpx.AsyncClient, role: str, office: str = "kota-serang") -> None:
    email = f"{role}@{office}.example.go.id"
    _, secret = await make_staff(hub, email, role, office, PASSWORD)
    assert (await sign_in(client, email, PASSWORD, secret)).status_code == 303


async def _count(hub, model, *where) -> int:
    async with hub.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _key_rows(client) -> list[list[str]]:
    page = await client.get("/console/kunci")
    assert page.status_code == 200
    body = page.text[page.text.index('id="keys"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    return [
        [
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def test_a_key_is_shown_once_then_only_its_prefix_and_its_last_use(hub, client):
    await _as(hub, client, "admin")
    page = await client.get("/console/kunci")
    made = await client.post(
        "/console/kunci",
        data={"csrf": csrf_of(page.text), "name": SCRIPT, "role": "staff", "office": "kota-serang"},
    )
    assert made.status_code == 200
    key = re.search(r'id="api-key">([^<]+)<', made.text).group(1)
    assert key.startswith("hub_") and SCRIPT not in made.text and "&lt;script&gt;" in made.text
    prefix = key.split("_")[1]
    rows = await _key_rows(client)
    assert len(rows) == 1 and re.fullmatch(r"\d{1,2} \w{3} 20\d\d \d\d\.\d\d WIB", rows[0][4]), rows
    assert rows[0][:4] + rows[0][5:6] == [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        f"hub_{prefix}_…",
        "staff (pengumuman, pelanggan)",
        "kota-serang",
        "Belum pernah",
    ]
    listing = (await client.get("/console/kunci")).text
    assert key not in listing and key.split("_", 2)[2] not in listing
    # The key works; its use is recorded (once a minute at most) and shown.
    api = await client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 200
    async with hub.db.session() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    first_use = row.last_used_at
    assert first_use is not None
    await client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})
    async with hub.db.session() as session:
        assert (await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == row.id))) == first_use
    assert (await _key_rows(client))[0][5].endswith("WIB")
    # Revoked: refused by the API, marked on the page, recorded in the audit log.
    page = await client.get("/console/kunci")
    revoked = await client.post(f"/console/kunci/{row.id}/cabut", data={"csrf": csrf_of(page.text)})
    assert revoked.status_code == 303 and revoked.headers["location"] == "/console/kunci?ok=revoked"
    assert (await client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"})).status_code == 401
    assert (await _key_rows(client))[0][6] == "Dicabut"
    async with hub.db.session() as session:
        actions = list(
            (
                await session.execute(select(AuditEntry.action, AuditEntry.target).order_by(AuditEntry.id))
            ).all()
        )
    assert [a for a in actions if a[0].startswith("key.")] == [
        ("key.create", f"key:{row.id}"),
        ("key.revoke", f"key:{row.id}"),
    ]


async def test_keys_are_for_admins_of_their_own_offices_with_a_csrf_token(hub, client, other_client):
    foreign = await keys.create_key(hub, "kota-pekalongan", "intake", "sistem pekalongan")
    async with hub.db.session() as session:
        foreign_id = await session.scalar(select(ApiKey.id).where(ApiKey.prefix == foreign.split("_")[1]))
    await _as(hub, client, "admin")
    page = await client.get("/console/kunci")
    assert "sistem pekalongan" not in page.text
    for key_id in (foreign_id, 999999):
        refused = await client.post(f"/console/kunci/{key_id}/cabut", data={"csrf": csrf_of(page.text)})
        assert refused.status_code == 404 and "Halaman tidak ditemukan" in refused.text
    other_office = await client.post(
        "/console/kunci",
        data={"csrf": csrf_of(page.text), "name": "x", "role": "staff", "office": "kota-pekalongan"},
    )
    assert other_office.status_code == 400 and "Pilih salah satu kantor Anda." in other_office.text
    stale = await client.post("/console/kunci", data={"name": "x", "role": "staff", "office": "kota-serang"})
    assert stale.status_code == 403 and "Formulir kedaluwarsa" in stale.text
    no_token = await client.post(f"/console/kunci/{foreign_id}/cabut")
    assert no_token.status_code == 403
    await _as(hub, other_client, "viewer")
    assert (await other_client.get("/console/kunci")).status_code == 403
    viewer_page = await other_client.get("/console/pelanggan")
    created = await other_client.post(
        "/console/kunci",
        data={"csrf": csrf_of(viewer_page.text), "name": "x", "role": "staff", "office": "kota-serang"},
    )
    assert created.status_code == 403
    assert await _count(hub, ApiKey) == 1
    assert await _count(hub, ApiKey, ApiKey.revoked) == 0


async def _group(hub, office: str, address: str) -> int:
    async with hub.db.transaction() as session:
        subscriber = Subscriber(locale="id")
        session.add(subscriber)
        await session.flush()
        endpoint = Endpoint(
            subscriber_id=subscriber.id,
            channel="telegram",
            address=address,
            kind="group",
            relay_office_id=office,
        )
        session.add(endpoint)
        await session.flush()
        topic = await session.scalar(select(Topic.id).where(Topic.slug == office))
        session.add(Subscription(topic_id=topic, endpoint_id=endpoint.id, state="confirmed"))
        return endpoint.id


async def test_relay_codes_and_groups_paused_resumed_removed(hub, client):
    own = await _group(hub, "kota-serang", "-1001234567890")
    foreign = await _group(hub, "kota-pekalongan", "-1009876543210")
    await _as(hub, client, "admin")
    page = await client.get("/console/relay")
    assert page.status_code == 200
    assert "-10***90" in page.text and "1234567890" not in page.text and "-10***10" not in page.text
    made = await client.post(
        "/console/relay/kode", data={"csrf": csrf_of(page.text), "office": "kota-serang"}
    )
    code = re.search(r'id="relay-code">([^<]+)<', made.text).group(1)
    assert f"/kelurahan {code}" in made.text
    async with hub.db.session() as session:
        assert (await session.get(KeyValue, f"relay:{code}")).value == "kota-serang"
    assert code not in (await client.get("/console/relay")).text
    assert "1 kode belum dipakai" in (await client.get("/console/relay")).text

    async def act(endpoint_id: int, action: str) -> httpx.Response:
        form = await client.get("/console/relay")
        return await client.post(f"/console/relay/{endpoint_id}/{action}", data={"csrf": csrf_of(form.text)})

    async def state(endpoint_id: int) -> tuple:
        async with hub.db.session() as session:
            row = await session.get(Endpoint, endpoint_id)
            subscribed = await session.scalar(
                select(Subscription.state).where(Subscription.endpoint_id == endpoint_id)
            )
            return row.active, row.relay_office_id, subscribed

    assert (await act(own, "jeda")).headers["location"] == "/console/relay?ok=paused"
    assert await state(own) == (False, "kota-serang", "confirmed")
    assert "Dijeda" in (await client.get("/console/relay")).text
    assert (await act(own, "lanjut")).headers["location"] == "/console/relay?ok=resumed"
    assert await state(own) == (True, "kota-serang", "confirmed")
    for action in ("jeda", "hapus"):
        refused = await act(foreign, action)
        assert refused.status_code == 404
    assert await state(foreign) == (True, "kota-pekalongan", "confirmed")
    for path in (f"/console/relay/{own}/jeda", f"/console/relay/{own}/hapus", "/console/relay/kode"):
        stale = await client.post(path, data={"office": "kota-serang"})
        assert stale.status_code == 403 and "Formulir kedaluwarsa" in stale.text, path
    assert await state(own) == (True, "kota-serang", "confirmed")
    form = await client.get("/console/relay")
    elsewhere = await client.post(
        "/console/relay/kode", data={"csrf": csrf_of(form.text), "office": "kota-pekalongan"}
    )
    assert elsewhere.status_code == 400 and "Pilih salah satu kantor Anda." in elsewhere.text
    async with hub.db.session() as session:
        codes = await session.scalar(
            select(func.count()).select_from(KeyValue).where(KeyValue.key.like("relay:%"))
        )
    assert codes == 1
    # A group the channel deactivated (the bot was removed) is not revived by "resume".
    async with hub.db.transaction() as session:
        row = await session.get(Endpoint, own)
        row.active, row.deactivated_reason = False, "bot removed from the group"
    assert "Tidak aktif (bot dikeluarkan atau diblokir)" in (await client.get("/console/relay")).text
    await act(own, "lanjut")
    assert await state(own) == (False, "kota-serang", "confirmed")
    assert (await act(own, "hapus")).headers["location"] == "/console/relay?ok=removed"
    assert await state(own) == (False, None, "unsubscribed")
    assert "Belum ada grup kelurahan yang terdaftar." in (await client.get("/console/relay")).text
    english = (await client.get("/console/relay?lang=en")).text
    assert "<h1>Kelurahan relays</h1>" in english and "No kelurahan group is registered yet." in english
    async with hub.db.session() as session:
        actions = list(
            (
                await session.execute(
                    select(AuditEntry.action).where(AuditEntry.action.like("relay.%")).order_by(AuditEntry.id)
                )
            ).scalars()
        )
    assert actions == ["relay.code", "relay.pause", "relay.resume", "relay.remove"]


async def test_relays_need_an_admin(hub, client):
    await _as(hub, client, "approver")
    assert (await client.get("/console/relay")).status_code == 403
    page = await client.get("/console/pelanggan")
    refused = await client.post(
        "/console/relay/kode", data={"csrf": csrf_of(page.text), "office": "kota-serang"}
    )
    assert refused.status_code == 403
    async with hub.db.session() as session:
        assert (
            await session.scalar(
                select(func.count()).select_from(KeyValue).where(KeyValue.key.like("relay:%"))
            )
            == 0
        )
