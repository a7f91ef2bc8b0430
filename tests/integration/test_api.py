"""The HTTP API as an intake system, a PR officer and a citizen use it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from hub import subscriptions
from hub.api.app import create_app
from hub.delivery import drain
from hub.keys import create_key
from hub.store.models import ApiKey, Subscription


@pytest.fixture
async def api(hub):
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def _key(hub, office="kota-pekalongan", role="intake") -> dict[str, str]:
    return {"Authorization": f"Bearer {await create_key(hub, office, role, role)}"}


async def test_applicant_case_with_idempotency_and_status_update(hub, api, mailbox):
    headers = {**await _key(hub), "Idempotency-Key": "receipt-0042"}
    body = {
        "reference": "KTP-2020-0042",
        "document": "KTP-el",
        "contacts": [{"channel": "email", "address": "Pemohon@Mail.Example.com"}],
    }
    first = await api.post("/v1/applicants", json=body, headers=headers)
    again = await api.post("/v1/applicants", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 201
    assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
    assert re.fullmatch(r"\d{6}", first.json()["pin"]) and re.fullmatch(
        r"[A-Za-z0-9_-]{1,64}", first.json()["link_code"]
    )
    changed = await api.post("/v1/applicants", json={**body, "document": "KK"}, headers=headers)
    assert changed.status_code == 422 and "different request body" in changed.json()["error"]

    update = await api.post(
        "/v1/applicants/KTP-2020-0042/updates",
        headers=await _key(hub),
        json={"status": "needs_document", "missing_documents": ["fotokopi KK"]},
    )
    assert update.status_code == 202
    await drain(hub)
    [mail] = mailbox.to("pemohon@mail.example.com")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Berkas belum lengkap. Mohon lengkapi: fotokopi KK." in text
    assert "List-Unsubscribe" not in mail  # an applicant's own case is not a list
    status = await api.get(f"/v1/messages/{update.json()['message_id']}", headers=await _key(hub))
    assert status.json()["channels"]["email"]["sent"] == 1


async def test_api_keys_are_checked_scoped_and_stored_hashed(hub, api):
    assert (await api.post("/v1/applicants", json={})).status_code == 401
    wrong = await api.post(
        "/v1/applicants",
        json={"reference": "x", "document": "KK"},
        headers={"Authorization": "Bearer hub_dead_beef"},
    )
    assert wrong.status_code == 401 and "not recognised" in wrong.json()["error"]
    staff_only = await api.post(
        "/v1/announcements/preview",
        headers=await _key(hub),
        json={"template": "free_text", "topics": ["kota-pekalongan"]},
    )
    assert staff_only.status_code == 403
    other_office = await api.post(
        "/v1/announcements",
        headers=await _key(hub, "kota-serang", "staff"),
        json={"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": "a", "text": "b"}},
    )
    assert other_office.status_code == 403 and "outside" in other_office.json()["error"]
    async with hub.db.session() as session:
        stored = (await session.execute(select(ApiKey.key_hash))).scalars().all()
    assert all(len(h) == 64 for h in stored)


async def test_bad_input_gets_a_clear_json_error(hub, api, mailbox):
    staff = await _key(hub, "kota-pekalongan", "staff")
    cases = [
        ({"template": "nope", "topics": ["kota-pekalongan"]}, "unknown template 'nope'"),
        (
            {"template": "free_text", "topics": ["nowhere"], "data": {"title": "a", "text": "b"}},
            "unknown topic",
        ),
        (
            {"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": "a"}},
            "text: Field required",
        ),
        (
            {
                "template": "free_text",
                "topics": ["kota-pekalongan"],
                "data": {"title": "a", "text": "b"},
                "valid_from": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
                "valid_until": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            },
            "valid-until must be after valid-from",
        ),
    ]
    for body, expected in cases:
        response = await api.post("/v1/announcements", json=body, headers=staff)
        assert response.status_code == 422, body
        assert expected in response.json()["error"]
    bad_email = await api.post(
        "/v1/subscriptions/email", json={"topic": "kota-pekalongan", "email": "no-at-sign"}
    )
    assert bad_email.status_code == 422 and "invalid email address" in bad_email.json()["error"]
    await drain(hub)
    assert mailbox.messages == []


async def test_announcement_lifecycle_preview_publish_status(hub, api, mailbox):
    staff = await _key(hub, "kota-serang", "staff")
    await subscriptions.subscribe(hub, "kota-serang", "email", "warga@mail.example.com", confirmed=True)
    body = {
        "template": "link",
        "topics": ["kota-serang"],
        "data": {
            "link_name": "E-pusda",
            "url": "https://e-pusda.example.go.id",
            "description": "Perpustakaan kota tutup dua minggu; koleksi tetap bisa dibaca daring.",
        },
    }
    preview = await api.post("/v1/announcements/preview", json=body, headers=staff)
    assert preview.status_code == 200
    rendering = preview.json()["channels"]["email"]
    assert (
        rendering["recipients"] == 1
        and "E-pusda: https://e-pusda.example.go.id" in rendering["renderings"]["id"]["text"]
    )
    assert mailbox.messages == []  # a preview sends nothing

    draft = await api.post("/v1/announcements", json={**body, "action": "draft"}, headers=staff)
    assert draft.json()["state"] == "draft" and draft.json()["message_id"] is None
    published = await api.post(f"/v1/announcements/{draft.json()['id']}/publish", headers=staff)
    assert published.status_code == 200
    await drain(hub)
    assert len(mailbox.messages) == 1
    status = await api.get(f"/v1/messages/{published.json()['message_id']}", headers=staff)
    assert status.json()["totals"]["sent"] == 1 and status.json()["done"]
    assert (await api.get("/docs")).status_code == 200
    assert "/v1/applicants" in (await api.get("/openapi.json")).json()["paths"]


async def test_double_opt_in_and_one_click_unsubscribe(hub, api, mailbox):
    started = await api.post(
        "/v1/subscriptions/email", json={"topic": "kota-sukabumi", "email": "ibu@mail.example.com"}
    )
    assert started.status_code == 202 and started.json()["state"] == "pending"
    await drain(hub)
    [confirmation] = mailbox.to("ibu@mail.example.com")
    assert "Konfirmasi langganan" in confirmation["Subject"]
    link = re.search(
        r"http://hub.test(/v1/confirm/\S+)", confirmation.get_body(("plain",)).get_content()
    ).group(1)
    assert (await api.get(link)).status_code == 200

    staff = await _key(hub, "kota-sukabumi", "staff")
    await api.post(
        "/v1/announcements",
        headers=staff,
        json={
            "template": "hours_changed",
            "topics": ["kota-sukabumi"],
            "data": {"hours": {"pickup": "08:00-11:00", "online_whatsapp": "08:00-15:00"}},
        },
    )
    await drain(hub)
    announcement = mailbox.to("ibu@mail.example.com")[-1]
    unsubscribe = announcement["List-Unsubscribe"].strip("<>").removeprefix("http://hub.test")
    page = await api.get(unsubscribe)
    assert page.status_code == 200 and "<form" in page.text  # GET alone changes nothing
    one_click = await api.post(
        unsubscribe,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    async with hub.db.session() as session:
        states = (await session.execute(select(Subscription.state))).scalars().all()
    assert states == ["unsubscribed"]

    before = len(mailbox.messages)
    await api.post(
        "/v1/announcements",
        headers=staff,
        json={
            "template": "free_text",
            "topics": ["kota-sukabumi"],
            "data": {"title": "Lagi", "text": "Pesan kedua."},
        },
    )
    await drain(hub)
    assert len(mailbox.messages) == before
    forged = await api.post(unsubscribe[:-3] + "xyz")
    assert forged.status_code == 400


async def test_staff_see_only_their_offices_subscribers_masked(hub, api):
    await subscriptions.subscribe(hub, "kota-serang", "email", "serang@mail.example.com", confirmed=True)
    await subscriptions.subscribe(
        hub, "kota-pekalongan", "email", "pekalongan@mail.example.com", confirmed=True
    )
    serang = await api.get("/v1/subscribers", headers=await _key(hub, "kota-serang", "staff"))
    items = serang.json()["items"]
    assert [i["topic"] for i in items] == ["kota-serang"] and items[0]["address"] == "s***@mail.example.com"
    province = await api.get("/v1/subscribers", headers=await _key(hub, "banten-provinsi", "staff"))
    assert [i["topic"] for i in province.json()["items"]] == ["kota-serang"]  # Banten covers Serang only
