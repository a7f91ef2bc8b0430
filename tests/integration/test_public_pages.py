"""Issue 11, public pages in-process: what a citizen reads without signing in, and how it is cached.

The office page shows today's status and the announcements in force, in Bahasa Indonesia or English;
an unknown office is a localized 404; a page is served with a strong ETag (``If-None-Match`` -> 304)
and kept in memory until the earlier of its status's next change and ``public.cache_seconds``. Times
move with the rehearsal clock (``HUB_CLOCK_FILE``), as in a drill, never by waiting.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from hub import clock
from hub.announcements import AnnouncementInput, cancel, create
from hub.api.app import create_app
from hub.public import cache as public_cache
from hub.store.models import Subscription
from tests.conftest import make_settings, start_hub

#: A Tuesday in the 2020 sample period, 09:00 WIB.
START = datetime(2020, 3, 24, 2, 0)


@pytest.fixture
async def hub(sqlite_database, redis_url, smtp) -> AsyncIterator[object]:
    url, _ = sqlite_database
    instance = await start_hub(make_settings(url, redis_url, smtp[1]))
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def rehearsal(tmp_path, monkeypatch):
    """Set the hub's clock: ``rehearsal(when)`` (naive UTC), as ``HUB_CLOCK_FILE`` does for processes."""
    path = tmp_path / "clock"
    monkeypatch.setattr(clock, "CLOCK_FILE", str(path))
    monkeypatch.setattr(clock, "_shift", None)

    def set_to(when: datetime) -> None:
        path.write_text(when.isoformat() + "+00:00", encoding="utf-8")

    set_to(START)
    return set_to


@pytest.fixture
async def web(hub) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(hub)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        client.app = app  # type: ignore[attr-defined]  # its cache, for a test that must not wait
        yield client


async def _hours(hub, **times: datetime) -> int:
    announcement, _ = await create(
        hub,
        AnnouncementInput(
            template="hours_changed",
            topics=["kota-pekalongan"],
            data={"hours": {"monday": "08:00-11:00", "tuesday": "08:00-10:00"}, "daily_quota": 40},
            **{name: when.replace(tzinfo=UTC) for name, when in times.items()},
        ),
        publish=True,
    )
    return announcement.id


async def test_index_lists_regions_and_offices_in_both_languages(web):
    page = await web.get("/kantor")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<html lang="id">' in page.text
    assert "<h2>Kota Pekalongan</h2>" in page.text
    assert '<a href="/kantor/kota-pekalongan">Dindukcapil Kota Pekalongan</a>' in page.text
    assert '<a href="/kantor?lang=en" lang="en" hreflang="en">English</a>' in page.text
    english = await web.get("/kantor?lang=en")
    assert '<html lang="en">' in english.text and "Disdukcapil offices" in english.text
    assert '<a href="/kantor/kota-pekalongan?lang=en">' in english.text
    banten = await web.get("/kantor?wilayah=36")
    assert "Disdukcapil Kota Serang" in banten.text and "Kota Pekalongan" not in banten.text
    assert "<script" not in page.text and len(page.content) < 50_000


async def test_unknown_office_and_announcement_are_localized_404s(web, hub):
    for path in (
        "/kantor/tidak-ada",
        "/kantor/BAD%20ID",
        "/kantor/kota-serang/pengumuman/999999",
        "/kantor/kota-serang/pengumuman/abc",
        "/kantor?wilayah=99",
    ):
        page = await web.get(path)
        assert page.status_code == 404, path
        assert "<h1>Halaman tidak ditemukan</h1>" in page.text
        assert "etag" not in page.headers
    english = await web.get("/kantor/tidak-ada?lang=en")
    assert english.status_code == 404 and "<h1>Page not found</h1>" in english.text
    draft, _ = await create(
        hub,
        AnnouncementInput(template="free_text", topics=["kota-serang"], data={"title": "D", "text": "x"}),
        publish=False,
    )
    assert (await web.get(f"/kantor/kota-serang/pengumuman/{draft.id}")).status_code == 404


async def test_office_page_shows_announcements_in_force_and_the_ways_to_subscribe(
    web, hub, rehearsal, monkeypatch
):
    first = await _hours(hub, valid_from=START - timedelta(days=1), valid_until=START + timedelta(days=14))
    page = await web.get("/kantor/kota-pekalongan")
    assert page.status_code == 200
    assert "<h1>Dindukcapil Kota Pekalongan</h1>" in page.text
    title = "Dindukcapil Kota Pekalongan: jam layanan baru"
    link = f'<a href="/kantor/kota-pekalongan/pengumuman/{first}">{title}</a>'
    assert link in page.text
    assert 'action="/kantor/kota-pekalongan/langganan"' in page.text  # email is enabled in tests
    for href in ("feed.atom", "feed.json", "cap.atom", "cetak.pdf?ukuran=a4"):
        assert f'href="/kantor/kota-pekalongan/{href}"' in page.text
    assert "<script" not in page.text and len(page.content) < 50_000
    # Another office's page does not show it; the announcement page does, in both languages.
    assert f"/pengumuman/{first}" not in (await web.get("/kantor/kota-serang")).text
    one = await web.get(f"/kantor/kota-pekalongan/pengumuman/{first}")
    assert (
        one.status_code == 200
        and "Jam layanan berubah" in one.text
        and "Kuota: 40 orang per hari." in one.text
    )
    english = await web.get(f"/kantor/kota-pekalongan/pengumuman/{first}?lang=en")
    assert '<html lang="en">' in english.text and "Back to Dindukcapil Kota Pekalongan" in english.text
    await cancel(hub, first)
    # The cancellation wrote a new stamp (hub.freshness): read at once instead of within a second, the
    # rendered pages are dropped.
    monkeypatch.setattr(public_cache, "STAMP_EVERY", 0.0)
    cancelled = await web.get(f"/kantor/kota-pekalongan/pengumuman/{first}")
    assert '<span class="flag">Dibatalkan.</span>' in cancelled.text
    assert f"/pengumuman/{first}" not in (await web.get("/kantor/kota-pekalongan")).text


async def test_etag_gives_304_and_the_page_changes_at_the_announcements_boundaries(web, hub, rehearsal):
    starts, ends = START + timedelta(hours=2), START + timedelta(hours=3)  # 11.00-12.00 WIB
    announcement = await _hours(hub, valid_from=starts, valid_until=ends)
    before = await web.get("/kantor/kota-pekalongan")
    etag = before.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert before.headers["cache-control"] in ("public, max-age=60", "public, max-age=59")  # a minute at most
    assert f"/pengumuman/{announcement}" not in before.text  # not yet in force
    assert re.search('<p class="line">Hari ini: buka 08.00[-–]11.00 WIB, kuota 50 orang</p>', before.text)
    again = await web.get("/kantor/kota-pekalongan", headers={"If-None-Match": f'W/"x", {etag}'})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert (await web.get("/kantor/kota-pekalongan", headers={"If-None-Match": '"other"'})).status_code == 200

    rehearsal(starts)  # the cache entry ends at valid-from, well before its five seconds
    during = await web.get("/kantor/kota-pekalongan", headers={"If-None-Match": etag})
    assert during.status_code == 200 and during.headers["etag"] != etag
    assert f"/pengumuman/{announcement}" in during.text
    assert re.search('<p class="line">Hari ini: buka 08.00[-–]10.00 WIB, kuota 40 orang</p>', during.text)

    rehearsal(ends)  # and returns to what it was after valid-until
    after = await web.get("/kantor/kota-pekalongan", headers={"If-None-Match": etag})
    assert after.status_code == 304


async def test_cache_keeps_a_page_for_cache_seconds_then_renders_again():
    from hub.public.cache import PublicCache, Rendered

    cache, built = PublicCache(seconds=0.2), []

    async def build() -> Rendered:
        built.append(1)
        return Rendered(f"page {len(built)}".encode())

    first, _ = await cache.get(("x", "id"), build)
    second, _ = await cache.get(("x", "id"), build)
    assert (first.rendered.body, second.rendered.body, len(built)) == (b"page 1", b"page 1", 1)
    time.sleep(0.25)
    third, _ = await cache.get(("x", "id"), build)
    assert third.rendered.body == b"page 2"

    async def slow() -> Rendered:  # ten requests racing for one missing page render it once
        await asyncio.sleep(0.05)
        return await build()

    answers = await asyncio.gather(*(cache.get(("y", "id"), slow) for _ in range(10)))
    assert {a.rendered.body for a, _ in answers} == {b"page 3"} and len(built) == 3


async def test_email_form_starts_the_double_opt_in_and_qr_images_are_served(web, hub, mailbox):
    sent = await web.post(
        "/kantor/kota-serang/langganan", data={"email": "warga@mail.example.com", "lang": "en"}
    )
    assert sent.status_code == 200 and "<h1>Check your email</h1>" in sent.text
    assert sent.headers["cache-control"] == "no-store"
    async with hub.db.session() as session:
        states = (await session.execute(select(Subscription.state))).scalars().all()
    assert states == ["pending"]
    bad = await web.post("/kantor/kota-serang/langganan", data={"email": "bukan-email"})
    assert bad.status_code == 422 and "<h1>Alamat email tidak valid</h1>" in bad.text
    assert (
        await web.post("/kantor/tidak-ada/langganan", data={"email": "a@mail.example.com"})
    ).status_code == 404

    qr = await web.get("/kantor/kota-serang/qr/halaman.svg")
    assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
    assert qr.content.startswith(b"<svg") and qr.headers["etag"]
    assert (await web.get("/kantor/kota-serang/qr/telegram.svg")).status_code == 404  # no bot in these tests
    assert (await web.get("/kantor/kota-serang/qr/lain.svg")).status_code == 404


async def test_sms_way_names_the_number_and_keyword(sqlite_database, redis_url, smtp):
    sms = {
        "enabled": True,
        "sender": "DUKCAPIL",
        "number": "0812-0000-1234",
        "dlr_secret": "public-pages-dlr",
        "gateways": [{"driver": "kannel", "name": "kannel", "username": "hub", "password": "test",
                      "url": "http://127.0.0.1:9/cgi-bin/sendsms"}],
    }  # fmt: skip
    settings = make_settings(sqlite_database[0], redis_url, smtp[1])
    settings = settings.model_copy(update={"channels": {**settings.channels, "sms": sms}})
    instance = await start_hub(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(instance))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            page = await client.get("/kantor/kota-serang")
            assert "Kirim SMS ke 0812-0000-1234 dengan isi: <code>DAFTAR KOTA-SERANG</code>" in page.text
            assert '<img src="/kantor/kota-serang/qr/sms.svg"' in page.text
            qr = await client.get("/kantor/kota-serang/qr/sms.svg")
            assert qr.status_code == 200 and qr.content.startswith(b"<svg")
    finally:
        await instance.close()


def test_a_large_index_lists_regions_instead_of_every_office():
    from types import SimpleNamespace as Row

    from hub.public.pages import MAX_LISTED, _tree

    regions = [Row(code="1", name="Provinsi A", path="1/"), Row(code="2", name="Provinsi B", path="2/")]
    offices = [Row(id=f"o{i}", name=f"Kantor {i}", region_code="12"[i % 2]) for i in range(MAX_LISTED + 2)]
    top = _tree(regions, offices, "")
    assert top["collapsed"] and [(r["code"], r["count"]) for r in top["rows"]] == [("1", 151), ("2", 151)]
    one = _tree(regions, offices, "2")
    assert not one["collapsed"] and len(one["rows"][0]["offices"]) == 151
    assert _tree(regions, offices, "3") is None


def test_matrix_and_telegram_ways_name_the_bots():
    from types import SimpleNamespace as Row

    from hub.public.view import ways_to_subscribe
    from hub.settings import Settings

    telegram = Row(username="dukcapil_bot", deep_link=lambda p: f"https://t.me/dukcapil_bot?start={p}")
    hub = Row(
        channels={"matrix": Row(user_id="@dukcapil:matrix.example.id"), "telegram": telegram},
        settings=Settings(hub={"public_url": "https://info.example.go.id/"}),
    )
    ways = ways_to_subscribe(hub, Row(id="kota-serang"))
    assert ways.matrix == {
        "user": "@dukcapil:matrix.example.id",
        "url": "https://matrix.to/#/@dukcapil:matrix.example.id",
        "command": "!langganan kota-serang",
    }
    assert ways.qr_payload("telegram") == "https://t.me/dukcapil_bot?start=tkota-serang"
    assert ways.qr_payload("halaman") == "https://info.example.go.id/kantor/kota-serang"
    assert (ways.sms, ways.email, ways.qr_payload("sms")) == (None, False, None)
