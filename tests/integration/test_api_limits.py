"""Issue 9, holes 7 and 9 (API parts): per-client limits in Redis, and cases of other offices stay unseen.

"Two processes" are two hub instances built from the same settings (their own connections, one Redis
and one database), each behind its own app: a limit kept in a process's memory would let each of them
grant it in full.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from hub.api.app import create_app
from hub.context import build_hub
from hub.keys import create_key


@pytest.fixture
async def second(hub) -> AsyncIterator[object]:
    other = await build_hub(hub.settings)
    try:
        yield other
    finally:
        await other.close()


def _client(hub, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


async def test_email_subscribe_allows_five_per_client_in_ten_minutes_across_processes(hub, second):
    """25 requests from one client used to send 25 emails; now 5 pass, counted in Redis, even when
    the requests race over two API processes, and the rest get 429 with Retry-After in Bahasa."""
    one, two = _client(hub, "203.0.113.7"), _client(second, "203.0.113.7")
    async with one, two:
        answers = await asyncio.gather(
            *(
                (one if i % 2 else two).post(
                    "/v1/subscriptions/email",
                    json={"topic": "kota-serang", "email": f"warga{i}@mail.example.com"},
                )
                for i in range(25)
            )
        )
        assert sorted(r.status_code for r in answers) == [202] * 5 + [429] * 20
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json() == {
            "error": "Terlalu banyak permintaan berlangganan dari alamat Anda. "
            "Silakan coba lagi dalam 10 menit."
        }
        assert 590 <= int(refused.headers["Retry-After"]) <= 600
        english = await one.post(
            "/v1/subscriptions/email",
            json={"topic": "kota-serang", "email": "someone@mail.example.com", "locale": "en"},
        )
        assert (english.status_code, english.json()) == (
            429,
            {"error": "Too many subscription requests from your address. Please try again in 10 minutes."},
        )
    async with _client(hub, "198.51.100.20") as neighbour:
        fine = await neighbour.post(
            "/v1/subscriptions/email", json={"topic": "kota-serang", "email": "lain@mail.example.com"}
        )
        assert fine.status_code == 202


async def test_api_key_guessing_is_throttled_per_client_across_processes(hub, second):
    """40 wrong keys at once from one address over two processes: exactly 10 are answered "wrong"
    (401), the rest 429; then any key from that address gets 429 (a right one too: answering it would
    confirm a guess) with Retry-After; another address is not affected."""
    staff = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'staff', 'staff')}"}
    one, two = _client(hub, "203.0.113.9"), _client(second, "203.0.113.9")
    async with one, two:
        guesses = await asyncio.gather(
            *(
                (one if i % 2 else two).get("/v1/stats", headers={"X-API-Key": f"hub_{i:08x}_guess{i}"})
                for i in range(40)
            )
        )
        assert sorted(r.status_code for r in guesses) == [401] * 10 + [429] * 30
        assert {r.json()["error"] for r in guesses if r.status_code == 401} == {
            "API key not recognised or revoked"
        }
        for client in (one, two):
            for headers in ({"X-API-Key": "hub_00000000_more"}, staff):
                blocked = await client.get("/v1/stats", headers=headers)
                assert blocked.status_code == 429
                retry_after = int(blocked.headers["Retry-After"])
                assert 590 <= retry_after <= 600
                assert blocked.json() == {
                    "error": "too many requests with a wrong API key from this address; "
                    f"try again in {retry_after} s"
                }
        assert (await one.get("/v1/stats")).status_code == 401  # no key at all: not a guess
    async with _client(hub, "198.51.100.30") as office:
        assert (await office.get("/v1/stats", headers=staff)).status_code == 200


async def test_a_right_key_is_never_counted_as_a_guess(hub):
    staff = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'staff', 'staff')}"}
    async with _client(hub, "203.0.113.10") as office:
        answers = await asyncio.gather(*(office.get("/v1/stats", headers=staff) for _ in range(30)))
        assert [r.status_code for r in answers] == [200] * 30


async def test_another_offices_key_on_a_case_gets_exactly_the_unknown_case_answer(hub):
    """Office B cannot learn that office A has case KK-2020-77: every answer equals the one for a
    reference that exists nowhere (same status, same text but for the reference, same headers)."""
    own = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'intake', 'a')}"}
    other = {"Authorization": f"Bearer {await create_key(hub, 'kota-pekalongan', 'intake', 'b')}"}
    async with _client(hub, "198.51.100.40") as api:
        opened = await api.post(
            "/v1/applicants", json={"reference": "KK-2020-77", "document": "KK"}, headers=own
        )
        assert opened.status_code == 201
        bodies = [
            {"status": "verified"},
            {"status": "ready", "pickup_place": "loket 2"},
            {"status": "ready"},  # invalid: the same 422 whether or not the case exists
        ]
        for i, body in enumerate(bodies):
            for keyed in (False, True):
                first = {**other, **({"Idempotency-Key": f"a-{i}"} if keyed else {})}
                second_ = {**other, **({"Idempotency-Key": f"b-{i}"} if keyed else {})}
                existing = await api.post("/v1/applicants/KK-2020-77/updates", json=body, headers=first)
                unknown = await api.post("/v1/applicants/KK-2020-78/updates", json=body, headers=second_)
                assert existing.status_code == unknown.status_code
                assert existing.status_code in (404, 422)
                assert existing.text.replace("KK-2020-77", "REF") == unknown.text.replace("KK-2020-78", "REF")
                assert set(existing.headers) == set(unknown.headers)
        assert (
            await api.post("/v1/applicants/KK-2020-77/updates", json=bodies[0], headers=other)
        ).json() == {"error": "unknown case 'KK-2020-77' for office kota-pekalongan"}


async def test_another_offices_announcement_and_message_answer_as_unknown_ids(hub):
    """Ids count up, so a 403 "office kota-serang is outside this key's office" told another office
    whose announcement an id was; now it reads exactly as an id that does not exist."""
    serang = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'staff', 'a')}"}
    other = {"Authorization": f"Bearer {await create_key(hub, 'kota-pekalongan', 'staff', 'b')}"}
    body = {"template": "free_text", "topics": ["kota-serang"], "data": {"title": "Libur", "text": "Tutup."}}
    async with _client(hub, "198.51.100.50") as api:
        created = (await api.post("/v1/announcements", json=body, headers=serang)).json()
        ann, message = created["id"], created["message_id"]
        assert (await api.get(f"/v1/announcements/{ann}", headers=serang)).status_code == 200
        for kind, own_id in (("announcement", ann), ("message", message)):
            for shown in (own_id, own_id + 1000):  # theirs, then one that does not exist
                answer = await api.get(f"/v1/{kind}s/{shown}", headers=other)
                assert (answer.status_code, answer.json()) == (404, {"error": f"{kind} {shown} not found"})
        for action in ("publish", "cancel"):
            theirs = await api.post(f"/v1/announcements/{ann}/{action}", headers=other)
            assert (theirs.status_code, theirs.json()) == (404, {"error": f"announcement {ann} not found"})
