"""Issue 11, feeds and CAP: what a feed reader and a CAP receiver get from the hub, parsed back.

Atom is read with lxml and checked for what RFC 4287 requires; JSON Feed with json against version
1.1; every CAP document is validated against the OASIS CAP 1.2 schema (tests/data/cap/CAP-v1.2.xsd).
In-process on SQLite: the SQL is the announcements' own, tested on both databases elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from hub import announcements, clock
from hub.announcements import AnnouncementInput
from hub.api.app import create_app
from hub.context import Hub
from tests.conftest import ROOT, Mailbox, make_settings, start_hub

ATOM = "{http://www.w3.org/2005/Atom}"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SCHEMA = etree.XMLSchema(etree.parse(str(ROOT / "tests" / "data" / "cap" / "CAP-v1.2.xsd")))


@dataclass
class Public:
    hub: Hub
    web: httpx.AsyncClient
    app: Any

    async def get(self, path: str, status: int = 200, etag: str | None = None) -> httpx.Response:
        response = await self.web.get(path, headers={"If-None-Match": etag} if etag else {})
        assert response.status_code == status, (path, response.text[:300])
        return response

    def fresh(self) -> None:
        """Forget rendered documents, as the cache does after ``public.cache_seconds``."""
        cache = getattr(self.app.state, "public_cache", None)
        if cache is not None:
            cache.clear()


@pytest.fixture
async def public(
    sqlite_database: tuple[str, str | None], redis_url: str, smtp: tuple[Mailbox, int]
) -> AsyncIterator[Public]:
    hub = await start_hub(make_settings(sqlite_database[0], redis_url, smtp[1]))
    app = create_app(hub)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as web:
            yield Public(hub, web, app)
    finally:
        await hub.close()


async def publish(hub: Hub, topic: str, **data: Any) -> int:
    req = AnnouncementInput(template="free_text", topics=[topic], data=data)
    announcement, _ = await announcements.create(hub, req, publish=True)
    return announcement.id


def atom_feed(body: bytes) -> etree._Element:
    """The feed, after checking what RFC 4287 requires of it and of each entry."""
    feed = etree.fromstring(body)
    assert feed.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{name}") is not None, name
    assert feed.find(f"{ATOM}link[@rel='self']") is not None
    for entry in feed.findall(f"{ATOM}entry"):
        for name in ("id", "title", "updated", "content"):
            assert (entry.findtext(f"{ATOM}{name}") or "").strip(), name
        datetime.fromisoformat(entry.findtext(f"{ATOM}updated"))
    return feed


def json_feed(body: bytes) -> dict[str, Any]:
    """The feed, after checking what JSON Feed 1.1 requires of it and of each item."""
    feed = json.loads(body)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] and isinstance(feed["items"], list)
    for item in feed["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert item.get("content_html") or item.get("content_text")
        datetime.fromisoformat(item["date_modified"])
    return feed


def atom_entries(feed: etree._Element) -> list[tuple[str, str]]:
    return [(e.findtext(f"{ATOM}id"), e.findtext(f"{ATOM}title")) for e in feed.findall(f"{ATOM}entry")]


def cap_alert(body: bytes) -> etree._Element:
    document = etree.fromstring(body)
    SCHEMA.assertValid(document)
    return document


async def test_office_and_region_feeds_parse_back_with_stable_ids(public: Public) -> None:
    hub = public.hub
    both = await publish(
        hub,
        "kota-pekalongan",
        title={"id": "Loket KIA buka Sabtu", "en": "KIA counter open on Saturday"},
        text={"id": "Loket KIA buka Sabtu pukul 08.00.", "en": "The KIA counter opens on Saturday at 08:00."},
    )
    only_id = await publish(
        hub, "kota-pekalongan", title="Server SIAK gangguan", text="Cetak KTP-el tertunda."
    )
    elsewhere = await publish(hub, "kota-serang", title="Kota Serang tutup", text="Tutup sehari.")
    data = {"title": "Banten melayani daring", "text": "Semua kantor di Banten melayani daring."}
    province, _ = await announcements.create(
        hub, AnnouncementInput(template="free_text", regions=["36"], data=data), publish=True
    )

    atom = await public.get("/kantor/kota-pekalongan/feed.atom")
    assert atom.headers["content-type"].startswith("application/atom+xml")
    feed = atom_feed(atom.content)
    assert feed.get(XML_LANG) == "id"
    listed = atom_entries(feed)
    ids = [i for i, _ in listed]
    assert ids[-2:] == [
        f"tag:hub.test,2020:kantor/kota-pekalongan/pengumuman/{only_id}",
        f"tag:hub.test,2020:kantor/kota-pekalongan/pengumuman/{both}",
    ]
    assert "Dindukcapil Kota Pekalongan: Loket KIA buka Sabtu" in dict(listed).values()
    assert not any(i.endswith(f"/pengumuman/{elsewhere}") for i in ids)
    assert (
        await public.get("/kantor/kota-pekalongan/feed.atom", 304, etag=atom.headers["etag"])
    ).content == b""

    english = json_feed((await public.get("/kantor/kota-pekalongan/feed.json?lang=en")).content)
    items = {item["id"]: item for item in english["items"]}
    assert english["language"] == "en"
    mine = items[ids[-1]]
    assert (
        mine["title"] == "Dindukcapil Kota Pekalongan: KIA counter open on Saturday"
        and mine["language"] == "en"
    )
    assert mine["url"] == f"http://hub.test/kantor/kota-pekalongan/pengumuman/{both}?lang=en"
    assert items[ids[-2]]["language"] == "id"  # no English texts: the Indonesian ones, said so

    # Stable: the same ids on a new rendering, after a correction and a cancellation updated them.
    correction, _ = await announcements.correct(
        hub,
        only_id,
        AnnouncementInput(template="free_text", data={"title": "Server SIAK pulih", "text": "Cetak lagi."}),
    )
    await announcements.cancel(hub, both)
    public.fresh()
    again = json_feed((await public.get("/kantor/kota-pekalongan/feed.json")).content)
    by_id = {item["id"]: item for item in again["items"]}
    assert set(ids) <= set(by_id)
    assert (
        by_id[ids[-1]]["title"].startswith("Dibatalkan: ")
        and by_id[ids[-1]]["_disdukcapil"]["state"] == "cancelled"
    )
    assert by_id[ids[-2]]["_disdukcapil"]["corrected_by"] == [
        f"http://hub.test/kantor/kota-pekalongan/pengumuman/{correction.id}"
    ]
    first = (
        again["items"][0]
        if again["items"][0]["_disdukcapil"]["kind"] == "announcement"
        else again["items"][1]
    )
    assert first["title"].startswith("Ralat: ") and first["id"].endswith(f"/pengumuman/{correction.id}")

    region = json_feed((await public.get("/wilayah/33/feed.json")).content)
    assert {f"/pengumuman/{n}" for n in (both, only_id, correction.id)} <= {
        i["id"][i["id"].index("/peng") :] for i in region["items"]
    }
    assert not any(i["id"].endswith(f"/pengumuman/{elsewhere}") for i in region["items"])
    banten = [i for i, _ in atom_entries(atom_feed((await public.get("/wilayah/36/feed.atom")).content))]
    assert banten[1] == f"tag:hub.test,2020:kantor/kota-serang/pengumuman/{elsewhere}"
    assert banten[0].endswith(f"/pengumuman/{province.id}") and len(banten) == 2
    # An office's feed also carries what was announced for a region above it, linking its own page.
    regency = json_feed((await public.get("/kantor/kabupaten-serang/feed.json")).content)["items"]
    assert [(i["id"], i["url"]) for i in regency[1:]] == [
        (banten[0], f"http://hub.test/kantor/kabupaten-serang/pengumuman/{province.id}")
    ]
    assert not any(i.endswith(f"/pengumuman/{province.id}") for i in ids)

    for missing in ("/kantor/tidak-ada/feed.atom", "/kantor/tidak-ada/feed.json", "/wilayah/99/feed.json"):
        await public.get(missing, 404)


async def test_cap_alert_update_cancel_are_valid_cap_12(public: Public) -> None:
    hub = public.hub
    now = clock.utcnow()
    req = AnnouncementInput(
        template="free_text",
        topics=["kota-pekalongan"],
        data={
            "title": {"id": "Layanan keliling libur", "en": "Mobile service off"},
            "text": {"id": "Libur.", "en": "Off."},
        },
        valid_from=now - timedelta(hours=1),
        valid_until=now + timedelta(days=2),
    )
    original, _ = await announcements.create(hub, req, publish=True)
    path = f"/kantor/kota-pekalongan/cap/{original.id}.xml"
    alert = cap_alert((await public.get(path)).content)
    assert alert.findtext(f"{CAP}msgType") == "Alert" and alert.findtext(f"{CAP}status") == "Actual"
    ident, sender, sent = (alert.findtext(f"{CAP}{n}") for n in ("identifier", "sender", "sent"))
    assert ident == f"hub.test.pengumuman.{original.id}" and sender == "hub.test" and sent.endswith("+07:00")
    infos = alert.findall(f"{CAP}info")
    assert [i.findtext(f"{CAP}language") for i in infos] == ["id-ID", "en-US"]
    assert infos[1].findtext(f"{CAP}headline") == "Dindukcapil Kota Pekalongan: Mobile service off"
    assert (
        infos[0].findtext(f"{CAP}web") == f"http://hub.test/kantor/kota-pekalongan/pengumuman/{original.id}"
    )
    area = infos[0].find(f"{CAP}area")
    assert area.findtext(f"{CAP}areaDesc") == "Kota Pekalongan"
    assert [area.findtext(f"{CAP}geocode/{CAP}{n}") for n in ("valueName", "value")] == [
        "KEMENDAGRI",
        "33.75",
    ]
    assert datetime.fromisoformat(infos[0].findtext(f"{CAP}expires")) > datetime.fromisoformat(sent)
    assert (await public.get(path)).content == (await public.get(path)).content  # stable

    index = atom_feed((await public.get("/kantor/kota-pekalongan/cap.atom")).content)
    links = [
        link.get("href") for link in index.iter(f"{ATOM}link") if link.get("type") == "application/cap+xml"
    ]
    assert links == [f"http://hub.test{path}"]

    correction, _ = await announcements.correct(hub, original.id, req.model_copy(update={"topics": []}))
    update = cap_alert((await public.get(f"/kantor/kota-pekalongan/cap/{correction.id}.xml")).content)
    assert update.findtext(f"{CAP}msgType") == "Update"
    assert update.findtext(f"{CAP}references") == f"hub.test,{ident},{sent}"

    await announcements.cancel(hub, correction.id)
    public.fresh()
    cancel = cap_alert((await public.get(f"/kantor/kota-pekalongan/cap/{correction.id}.xml")).content)
    assert cancel.findtext(f"{CAP}msgType") == "Cancel"
    assert cancel.findtext(f"{CAP}identifier") == f"hub.test.pengumuman.{correction.id}.batal"
    refs = cancel.findtext(f"{CAP}references").split(" ")
    assert refs[0] == f"hub.test,{ident},{sent}" and refs[1].startswith(
        f"hub.test,hub.test.pengumuman.{correction.id},"
    )
    assert atom_entries(atom_feed((await public.get("/kantor/kota-pekalongan/cap.atom")).content)) == []

    draft, _ = await announcements.create(hub, req, publish=False)
    other = await publish(hub, "kota-serang", title="Tutup", text="Tutup sehari.")
    for missing in (
        f"/kantor/kota-pekalongan/cap/{draft.id}.xml",
        f"/kantor/kota-pekalongan/cap/{other}.xml",  # another office's
        "/kantor/kota-pekalongan/cap/99999.xml",
        "/kantor/kota-pekalongan/cap/99999999999999999999999.xml",
        "/kantor/tidak-ada/cap.atom",
        f"/kantor/tidak-ada/cap/{original.id}.xml",
    ):
        await public.get(missing, 404)
    cap_alert((await public.get(f"/kantor/kota-serang/cap/{other}.xml")).content)


async def test_status_entry_changes_when_an_hours_announcement_starts_and_ends(
    public: Public, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the rehearsal clock; no cache clearing: the status's next change ends a cached feed by itself."""
    hub, clock_file = public.hub, tmp_path / "clock"
    monkeypatch.setattr(clock, "CLOCK_FILE", str(clock_file))

    def move_to(at: datetime) -> None:
        clock_file.write_text(at.isoformat())
        monkeypatch.setattr(clock, "_shift", None)

    start = clock.utcnow().replace(microsecond=0)
    move_to(start)
    begins, ends = start + timedelta(days=1), start + timedelta(days=2)
    req = AnnouncementInput(
        template="hours_changed",
        topics=["kota-pekalongan"],
        data={
            "hours": {
                d: "08:00-10:00"
                for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
            },
            "daily_quota": 30,
        },
        valid_from=begins.replace(tzinfo=UTC),
        valid_until=ends.replace(tzinfo=UTC),
    )
    hours, _ = await announcements.create(hub, req, publish=True)

    async def status_and_alerts() -> tuple[tuple[str, datetime], list[str]]:
        feed = atom_feed((await public.get("/kantor/kota-pekalongan/feed.atom")).content)
        status = feed.find(f"{ATOM}entry")  # first: the status
        assert "/status/" in status.findtext(f"{ATOM}id")
        index = atom_feed((await public.get("/kantor/kota-pekalongan/cap.atom")).content)
        return (status.findtext(f"{ATOM}id"), datetime.fromisoformat(status.findtext(f"{ATOM}updated"))), [
            i for i, _ in atom_entries(index)
        ]

    before, alerts = await status_and_alerts()
    assert alerts == []
    move_to(begins + timedelta(hours=1))
    during, alerts = await status_and_alerts()
    assert during[0] != before[0] and during[1] == begins.replace(tzinfo=UTC)
    assert alerts == [f"tag:hub.test,2020:kantor/kota-pekalongan/cap/{hours.id}"]
    move_to(ends + timedelta(hours=1))
    after, alerts = await status_and_alerts()
    assert after[0] != during[0] and after[1] == ends.replace(tzinfo=UTC) and alerts == []
