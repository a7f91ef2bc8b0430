"""The HTTP API as an intake system, a PR officer and a citizen use it."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from hub import delivery, subscriptions
from hub.api.app import create_app
from hub.delivery import drain
from hub.keys import create_key
from hub.queue import Queue
from hub.store.models import ApiKey, CaseUpdate, Endpoint, Message, Subscription


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
            "data": {"hours": {"monday": "08:00-11:00", "friday": "08:00-10:00"}},
        },
    )
    await drain(hub)
    announcement = mailbox.to("ibu@mail.example.com")[-1]
    unsubscribe = announcement["List-Unsubscribe"].strip().strip("<>").removeprefix("http://hub.test")
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


# -- issue 8: errors, references, contacts, races, pages, Redis down ------------------------------------


async def test_every_error_answers_error_never_detail(hub, api):
    """Unknown routes, wrong methods, bad bodies and domain errors all answer ``{"error": ...}``."""
    intake = await _key(hub)
    answers = {
        "unknown route": await api.get("/v1/nothing-here"),
        "wrong method": await api.delete("/v1/applicants"),
        "bad body": await api.post("/v1/applicants", json={"document": "KK"}, headers=intake),
        "unknown case": await api.post(
            "/v1/applicants/NOPE-1/updates", json={"status": "verified"}, headers=intake
        ),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {"unknown route": 404, "wrong method": 405, "bad body": 422, "unknown case": 404}
    for name, response in answers.items():
        body = response.json()
        assert "detail" not in body and isinstance(body["error"], str) and body["error"], name
    assert answers["bad body"].json()["error"] == "reference: Field required"
    assert answers["unknown case"].json()["error"] == "unknown case 'NOPE-1' for office kota-pekalongan"
    opened = {"reference": "KK-7", "document": "KK"}
    assert (await api.post("/v1/applicants", json=opened, headers=intake)).status_code == 201
    again = await api.post("/v1/applicants", json=opened, headers=intake)
    assert again.status_code == 409
    assert again.json() == {"error": "case 'KK-7' already exists for office kota-pekalongan"}


async def test_reference_with_a_slash_is_refused_and_every_opened_case_can_be_updated(hub, api):
    intake = await _key(hub)
    refused = await api.post(
        "/v1/applicants", json={"reference": "KTP/2020/0042", "document": "KTP-el"}, headers=intake
    )
    assert refused.status_code == 422
    assert refused.json()["error"] == (
        "reference: may hold only letters, digits, '.', '_' and '-' (not '/'); "
        "write e.g. KTP-2020-0042 instead of KTP/2020/0042"
    )
    for reference in ("KTP-2020-0042", "kk.2020_7"):
        opened = await api.post(
            "/v1/applicants", json={"reference": reference, "document": "KK"}, headers=intake
        )
        assert opened.status_code == 201
        update = await api.post(
            f"/v1/applicants/{reference}/updates", json={"status": "verified"}, headers=intake
        )
        assert update.status_code == 202, update.text


async def test_a_wrong_contact_is_named_by_its_field(hub, api, mailbox):
    body = {
        "reference": "KTP-9",
        "document": "KTP-el",
        "contacts": [
            {"channel": "email", "address": "benar@mail.example.com"},
            {"channel": "email", "address": "salah-tanpa-at"},
        ],
    }
    response = await api.post("/v1/applicants", json=body, headers=await _key(hub))
    assert response.status_code == 422
    assert response.json()["error"].startswith("contacts.1.address: invalid email address")
    unknown = await api.post(
        "/v1/applicants",
        json={**body, "contacts": [{"channel": "fax", "address": "123"}]},
        headers=await _key(hub),
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "contacts.0.channel: channel 'fax' is not enabled (enabled: email)"
    async with hub.db.session() as session:
        assert (await session.execute(select(Endpoint.id))).all() == []


TOPICS = ("kota-serang", "kota-serang", "kota-serang/kk", "kota-serang/kia", "kota-serang")


async def test_first_requests_of_one_new_citizen_at_once_never_answer_500(hub, api):
    """Five first subscriptions of one new address at the same moment: all accepted, one endpoint.

    Each round comes from its own client address: five is also the form's limit per client.
    """
    app = create_app(hub)
    for round_ in range(3):
        client_address = (f"10.0.0.{round_ + 1}", 50000)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client_address)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            address = f"baru{round_}@mail.example.com"
            answers = await asyncio.gather(
                *(
                    client.post("/v1/subscriptions/email", json={"topic": topic, "email": address})
                    for topic in TOPICS
                )
            )
            assert [r.status_code for r in answers] == [202] * 5, [r.text for r in answers]
    async with hub.db.session() as session:
        endpoints = (await session.execute(select(Endpoint.address))).scalars().all()
        subscriptions_ = (await session.execute(select(Subscription.id))).scalars().all()
    assert sorted(endpoints) == [f"baru{i}@mail.example.com" for i in range(3)]
    assert len(subscriptions_) == 9


async def test_subscriber_pages_return_every_row_in_scope(hub, api):
    """More rows than a page, with another office's rows in between: following the cursor finds all."""
    expected = []
    for i in range(3):
        await subscriptions.subscribe(hub, "kota-serang", "email", f"s{i}@mail.example.com", confirmed=True)
        expected.append(f"s{i}")
    for i in range(30):
        await subscriptions.subscribe(
            hub, "kota-pekalongan", "email", f"p{i}@mail.example.com", confirmed=True
        )
    for i in range(3, 8):
        await subscriptions.subscribe(hub, "kota-serang", "email", f"s{i}@mail.example.com", confirmed=True)
        expected.append(f"s{i}")
    staff = await _key(hub, "kota-serang", "staff")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/subscribers", params=params, headers=staff)).json()
        pages += 1
        seen += [(item["id"], item["topic"], item["address"]) for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(expected) == 8 and pages == 3
    assert {topic for _, topic, _ in seen} == {"kota-serang"}
    assert all(address == "s***@mail.example.com" for _, _, address in seen)
    assert len({i for i, _, _ in seen}) == 8


class _DeadRedis:
    """Stands in for a Redis that stopped: every command fails as redis-py fails on a refused socket."""

    def __getattr__(self, name: str):
        async def fail(*args, **kwargs):
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

        return fail


async def test_with_redis_down_updates_are_accepted_and_sent_once_when_it_returns(hub, api, mailbox):
    """Redis stops: /readyz says so (503), an applicant update is still accepted (the database is the
    truth), the intake system's retry with the same key is answered from the record, and once Redis is
    back the reconciler queues the update: exactly one email."""
    intake = {**await _key(hub), "Idempotency-Key": "update-1"}
    await api.post(
        "/v1/applicants",
        json={
            "reference": "KK-2020-1",
            "document": "KK",
            "contacts": [{"channel": "email", "address": "pemohon@mail.example.com"}],
        },
        headers=await _key(hub),
    )
    assert (await api.get("/readyz")).status_code == 200
    real = hub.redis
    hub.redis = _DeadRedis()
    try:
        health = await api.get("/readyz")
        assert health.status_code == 503 and health.headers["Retry-After"]
        assert {k: health.json()[k] for k in ("database", "redis")} == {"database": "ok", "redis": "down"}
        body = {"status": "ready", "pickup_place": "loket 3"}
        first = await api.post("/v1/applicants/KK-2020-1/updates", json=body, headers=intake)
        assert first.status_code == 202, first.text
        retry = await api.post("/v1/applicants/KK-2020-1/updates", json=body, headers=intake)
        assert retry.status_code == 202 and retry.json() == first.json()
        assert retry.headers["Idempotent-Replayed"] == "true"
    finally:
        hub.redis = real
    await drain(hub)
    assert len(mailbox.to("pemohon@mail.example.com")) == 1
    again = await api.post("/v1/applicants/KK-2020-1/updates", json=body, headers=intake)
    assert again.json() == first.json()
    await drain(hub)
    assert len(mailbox.to("pemohon@mail.example.com")) == 1


async def test_an_update_that_fails_after_saving_is_never_sent_twice(hub, mailbox, monkeypatch):
    """The process fails after the update's message row was saved (here: queuing it raises). Whatever the
    first answer was, the intake system's retry with the same Idempotency-Key must not create a second
    message: the applicant gets exactly one email."""
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://hub.test")
    intake = await _key(hub)
    await client.post(
        "/v1/applicants",
        json={
            "reference": "KTP-5",
            "document": "KTP-el",
            "contacts": [{"channel": "email", "address": "lima@mail.example.com"}],
        },
        headers=intake,
    )

    async def fail(*args, **kwargs):
        raise RuntimeError("injected: the process failed after saving the message")

    monkeypatch.setattr(Queue, "plan", fail)
    headers = {**intake, "Idempotency-Key": "u-5"}
    body = {"status": "verified"}
    failed = await client.post("/v1/applicants/KTP-5/updates", json=body, headers=headers)
    monkeypatch.undo()
    retried = await client.post("/v1/applicants/KTP-5/updates", json=body, headers=headers)
    assert retried.status_code == 202
    await drain(hub)
    await client.aclose()
    async with hub.db.session() as session:
        messages = (await session.execute(select(Message.id).where(Message.kind == "applicant"))).all()
    assert len(messages) == 1 and len(mailbox.to("lima@mail.example.com")) == 1
    assert failed.status_code == 500 and failed.json() == {"error": "internal error; it has been logged"}


async def test_a_failure_inside_the_update_leaves_nothing_behind(hub, mailbox, monkeypatch):
    """A failure between saving the message and committing rolls back the message, the case update and
    the idempotency record together: the retry with the same key does the work once."""
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://hub.test")
    intake = await _key(hub)
    await client.post(
        "/v1/applicants",
        json={
            "reference": "KTP-6",
            "document": "KTP-el",
            "contacts": [{"channel": "email", "address": "enam@mail.example.com"}],
        },
        headers=intake,
    )
    real_create = delivery.create_message

    async def create_then_fail(*args, **kwargs):
        await real_create(*args, **kwargs)
        raise RuntimeError("injected: the process failed after saving the message")

    monkeypatch.setattr(delivery, "create_message", create_then_fail)
    headers = {**intake, "Idempotency-Key": "u-6"}
    failed = await client.post("/v1/applicants/KTP-6/updates", json={"status": "verified"}, headers=headers)
    assert failed.status_code == 500
    async with hub.db.session() as session:
        assert (await session.execute(select(Message.id).where(Message.kind == "applicant"))).all() == []
        assert (await session.execute(select(CaseUpdate.id))).all() == []
    monkeypatch.undo()
    retried = await client.post("/v1/applicants/KTP-6/updates", json={"status": "verified"}, headers=headers)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    await drain(hub)
    await client.aclose()
    assert len(mailbox.to("enam@mail.example.com")) == 1
