"""An office's status as the source of truth, as deployed (issue 11).

An hours announcement for a sample office changes what every reader sees from its valid-from: the public
page, the office's Atom feed, the CAP index of alerts in force and the bot's ``/jam``; after its valid-until
they all show the office's own status again. The processes run on a rehearsal clock (``HUB_CLOCK_FILE``,
hub/clock.py) that the test moves, so nothing waits for a real Tuesday.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
from lxml import etree

from tests.deployed.conftest import Deployment
from tests.deployed.test_telegram import with_telegram
from tests.fakes.telegram_api import FakeTelegram

OFFICE = "kota-pekalongan"
CITIZEN = 6_300_001
ATOM = "{http://www.w3.org/2005/Atom}"
# A Monday, then the Tuesday and Thursday after it (office time, WIB).
MONDAY, TUESDAY, THURSDAY = "2030-03-04T09:00+07:00", "2030-03-05T09:00+07:00", "2030-03-07T09:00+07:00"
HOURS = {
    "hours": {"senin": "08:00-12:00", "selasa": "08:00-12:00", "rabu": "08:00-12:00"},
    "daily_quota": 80,
}
BEFORE = "Hari ini: buka 08.00\u201311.00 WIB, kuota 50 orang"
DURING = "Hari ini: buka 08.00\u201312.00 WIB, kuota 80 orang"


def set_clock(clock: Path, when: str) -> None:
    clock.write_text(datetime.fromisoformat(when).isoformat(), encoding="utf-8")


def seen(d: Deployment, fake: FakeTelegram) -> dict[str, object]:
    """What a citizen, a feed reader, an alerting system and a bot user see at the hub's time."""
    page = d.api.get(f"/kantor/{OFFICE}").text
    today = next(line.strip() for line in _text(page).splitlines() if line.strip().startswith("Hari ini"))
    atom = etree.fromstring(d.api.get(f"/kantor/{OFFICE}/feed.atom").content)
    cap_index = etree.fromstring(d.api.get(f"/kantor/{OFFICE}/cap.atom").content)
    before = len(fake.messages(CITIZEN))
    fake.inject_message(CITIZEN, f"/jam {OFFICE}")
    d.wait_for(lambda: len(fake.messages(CITIZEN)) > before, 20, "the bot's answer to /jam")
    return {
        "today": today,
        "status_entry": _first_entry(atom),
        "alerts": [e.findtext(f"{ATOM}id") for e in cap_index.iter(f"{ATOM}entry")],
        "jam": fake.messages(CITIZEN)[-1].visible_text,
    }


def _first_entry(atom: etree._Element) -> tuple[str, str]:
    """The feed's first entry, the office's status: its id and the line with Monday's hours."""
    entry = next(atom.iter(f"{ATOM}entry"))
    lines = entry.findtext(f"{ATOM}content").replace("<br>", "\n").replace("<p>", "\n").splitlines()
    monday = next(line for line in lines if line.startswith("- Senin"))
    return entry.findtext(f"{ATOM}id"), monday


def _text(html: str) -> str:
    return etree.tostring(etree.HTML(html), method="text", encoding="unicode")


def test_an_hours_announcement_shapes_every_view_only_while_it_is_valid(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram
) -> None:
    # Pages stay rendered until the status changes (hub time) or something is published (hub.freshness:
    # within a second), so a valid-from or valid-until shows as soon as the clock passes it.
    d = with_telegram(make_deployment, fake)
    clock = d.workdir / "clock.txt"
    set_clock(clock, MONDAY)
    d.env["HUB_CLOCK_FILE"] = str(clock)
    d.start_run()
    fake.add_private(CITIZEN)
    monday = seen(d, fake)
    assert monday["today"] == BEFORE

    data = d.workdir / "hours.json"
    data.write_text(json.dumps(HOURS), encoding="utf-8")
    published = json.loads(
        d.cli(
            "announce",
            "--topic",
            OFFICE,
            "--template",
            "hours_changed",
            "--data",
            str(data),
            "--from",
            "2030-03-05 00:00",
            "--until",
            "2030-03-07 00:00",
            "--force",
            "--json",
        ).stdout
    )
    time.sleep(1.2)
    cap = d.api.get(f"/kantor/{OFFICE}/cap/{published['id']}.xml")
    assert cap.status_code == 200
    info = etree.fromstring(cap.content).find("{urn:oasis:names:tc:emergency:cap:1.2}info")
    assert info.findtext("{urn:oasis:names:tc:emergency:cap:1.2}effective") == "2030-03-05T00:00:00+07:00"
    assert info.findtext("{urn:oasis:names:tc:emergency:cap:1.2}expires") == "2030-03-07T00:00:00+07:00"
    assert seen(d, fake) == {**monday, "jam": monday["jam"]}, "published, but not valid before Tuesday"

    set_clock(clock, TUESDAY)
    tuesday = seen(d, fake)
    assert tuesday["today"] == DURING
    assert tuesday["status_entry"][0] != monday["status_entry"][0]
    assert (monday["status_entry"][1], tuesday["status_entry"][1]) == (
        "- Senin: 08.00\u201311.00 WIB",
        "- Senin: 08.00\u201312.00 WIB",
    )
    assert len(tuesday["alerts"]) == len(monday["alerts"]) + 1
    assert "08.00\u201312.00" in str(tuesday["jam"]) and "80" in str(tuesday["jam"])

    set_clock(clock, THURSDAY)
    thursday = seen(d, fake)
    assert thursday["today"] == BEFORE
    assert thursday["alerts"] == monday["alerts"]
    assert thursday["status_entry"][1] == monday["status_entry"][1]
    assert thursday["jam"] == monday["jam"]
    assert httpx.get(f"{d.url}/kantor/{OFFICE}/cap/{published['id']}.xml").status_code == 200
