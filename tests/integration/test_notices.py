"""Printable notices (issue 11), read back as a person at a notice board would: the paper size, the text
(pdftotext, compared whole with tests/golden/notices/), and every QR code (pdftoppm at 150 dpi, zbarimg)
followed to where it leads: the office's page answers, the Telegram link subscribes through the bot's
own ``/start``, and the SMS keyword printed beside them subscribes through the SMS adapter's parser.

Debian's poppler-utils and zbar-tools: scripts/install-pdf-tools.sh (``make test-deps``). SQLite only:
no SQL of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from channels.base import Inbound
from channels.sms import parse_mo
from hub import announcements, notices
from hub.api.app import create_app
from hub.context import Hub
from hub.inbound import handle_inbound
from hub.keys import create_key
from hub.store.models import Endpoint, Subscription, Topic
from tests.conftest import ROOT, Mailbox, make_settings, start_hub

GOLDEN = ROOT / "tests" / "golden" / "notices"
UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"
TOOLS = ("pdfinfo", "pdftoppm", "pdftotext", "zbarimg")
BOT = "DukcapilHubBot"
SMS_NUMBER = "081234567890"
#: Points (1/72 inch) of each paper size, portrait.
PAPER = {"a4": (595.28, 841.89), "a5": (419.53, 595.28)}

#: A Pekalongan hours change as its office announced it in 2020, set in 2030 so it is still to come.
HOURS = {
    "template": "hours_changed",
    "topics": ["kota-pekalongan"],
    "data": {
        "basis": "Surat Edaran Wali Kota Pekalongan Nomor 443.1/001",
        "hours": {
            "monday": "08:00-12:00",
            "tuesday": "08:00-12:00",
            "wednesday": "08:00-12:00",
            "thursday": "08:00-12:00",
            "friday": "08:00-10:00",
        },
        "daily_quota": 40,
        "health_protocol": [
            {"id": "jaga jarak di antrean", "en": "keep your distance in the queue"},
            {"id": "pakai masker", "en": "wear a mask"},
        ],
    },
    "valid_from": "2030-03-23T08:00",
    "valid_until": "2030-04-06T15:00",
}


@pytest.fixture
async def hub(
    sqlite_database: tuple[str, str | None], redis_url: str, smtp: tuple[Mailbox, int]
) -> AsyncIterator[Hub]:
    """The sample offices, with a Telegram bot that has a username and an SMS number to text."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/install-pdf-tools.sh (make test-deps)")
    settings = make_settings(sqlite_database[0], redis_url, smtp[1])
    settings.channels["telegram"] = {"enabled": True, "token": "123456:notices-test", "username": BOT}
    settings.channels["sms"] = {
        "enabled": True,
        "number": SMS_NUMBER,
        "dlr_secret": "notices-test",
        "gateways": [{"driver": "kannel", "url": "http://127.0.0.1:9", "username": "u", "password": "p"}],
    }
    instance = await start_hub(settings)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def web(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def test_an_announcement_notice_reads_as_sent_and_its_codes_subscribe(hub, web, tmp_path):
    ann, _ = await announcements.create(hub, announcements.AnnouncementInput(**HOURS), publish=True)
    staff = {"Authorization": f"Bearer {await create_key(hub, 'kota-pekalongan', 'staff', 'pr')}"}
    elsewhere = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'staff', 'pr')}"}

    answer = await web.get(f"/v1/announcements/{ann.id}/notice.pdf", headers=staff)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert (await web.get(f"/v1/announcements/{ann.id}/notice.pdf", headers=elsewhere)).status_code == 404
    paper = tmp_path / "notice.pdf"
    paper.write_bytes(answer.content)

    assert page_sizes(paper) == [PAPER["a4"]]
    expect_golden("announcement-a4.id.txt", text_of(paper))
    codes = qr_codes(paper, tmp_path)
    page, telegram = (
        f"{hub.settings.hub.public_url}/kantor/kota-pekalongan",
        next(c for c in codes if "t.me" in c),
    )
    assert sorted(codes) == sorted([page, telegram])
    assert (await web.get(urlsplit(page).path)).status_code == 200

    # The Telegram link: this bot, and a payload its /start takes as "subscribe to the office".
    link = urlsplit(telegram)
    assert (link.scheme, link.netloc, link.path) == ("https", "t.me", f"/{BOT}")
    command, *args = f"/start {parse_qs(link.query)['start'][0]}".split()
    chat = Inbound(
        channel="telegram",
        kind="command",
        address="5550101",
        sender="5550101",
        command=command[1:],
        args=tuple(args),
    )
    await handle_inbound(hub, chat)
    assert await subscribed(hub, "telegram", "5550101") == ["kota-pekalongan"]

    # The SMS line, typed as printed, to the number printed.
    printed = re.search(r"ketik (.+) kirim ke (\d+)", text_of(paper))
    assert printed is not None and printed.group(2) == SMS_NUMBER
    await handle_inbound(hub, parse_mo("+6281299990101", printed.group(1)))
    assert await subscribed(hub, "sms", "+6281299990101") == ["kota-pekalongan"]

    # The public copy is the same notice (rendered once), validated by its ETag; a draft is nobody's.
    public = await web.get(f"/kantor/kota-pekalongan/pengumuman/{ann.id}/cetak.pdf")
    assert public.status_code == 200 and public.content == answer.content
    again = await web.get(public.request.url, headers={"If-None-Match": public.headers["etag"]})
    assert again.status_code == 304
    draft, _ = await announcements.create(hub, announcements.AnnouncementInput(**HOURS), publish=False)
    assert (await web.get(f"/kantor/kota-pekalongan/pengumuman/{draft.id}/cetak.pdf")).status_code == 404
    assert (await web.get(f"/kantor/kota-serang/pengumuman/{ann.id}/cetak.pdf")).status_code == 404


async def test_an_office_status_notice_on_a5_shows_the_status_of_its_day(hub, tmp_path):
    """The status on a Monday inside the announced hours change: the new hours, the announcement named."""
    await announcements.create(hub, announcements.AnnouncementInput(**HOURS), publish=True)
    monday = datetime(2030, 3, 25, 3, 0)  # 10:00 WIB
    made = await notices.office_notice(hub, "kota-pekalongan", size="a5", at=monday)
    paper = tmp_path / "status.pdf"
    paper.write_bytes(made.pdf)

    assert page_sizes(paper) == [PAPER["a5"]]
    expect_golden("status-a5.id.txt", text_of(paper))
    page = f"{hub.settings.hub.public_url}/kantor/kota-pekalongan"
    assert sorted(qr_codes(paper, tmp_path)) == sorted([page, f"https://t.me/{BOT}?start=tkota-pekalongan"])


# ---------------------------------------------------------------------------------------------------------


def page_sizes(pdf: Path) -> list[tuple[float, float]]:
    """Each page's width and height in points, as pdfinfo reads them."""
    shown = run("pdfinfo", "-f", "1", "-l", "99", str(pdf))
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", shown)
    return [(round(float(w), 2), round(float(h), 2)) for w, h in sizes]


def text_of(pdf: Path) -> str:
    """The text as pdftotext reads it, one line per printed line, blank lines and edge spaces dropped."""
    lines = (line.strip() for line in run("pdftotext", "-enc", "UTF-8", str(pdf), "-").splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def qr_codes(pdf: Path, folder: Path) -> list[str]:
    """Every QR code on every page, at the 150 dpi of an office printer's scan."""
    prefix = folder / pdf.stem
    run("pdftoppm", "-r", "150", "-png", str(pdf), str(prefix))
    images = sorted(str(p) for p in folder.glob(f"{pdf.stem}-*.png"))
    assert images
    return run("zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", *images).split()


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command[0]}: {done.stderr}"
    return done.stdout


def expect_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: HUB_UPDATE_GOLDEN=1 writes it (then review it)"
    assert text == path.read_text(encoding="utf-8")


async def subscribed(hub: Hub, channel: str, address: str) -> list[str]:
    """The topics the address follows, confirmed."""
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Topic.slug)
            .join(Subscription, Subscription.topic_id == Topic.id)
            .join(Endpoint, Endpoint.id == Subscription.endpoint_id)
            .where(
                Endpoint.channel == channel, Endpoint.address == address, Subscription.state == "confirmed"
            )
        )
        return sorted(rows.scalars())
