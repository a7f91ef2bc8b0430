"""Issue 11: the public office page in a real browser, as a citizen on an old phone sees it.

`hub run` from a settings file, sample data from `hub init --sample`, an hours announcement published
with the CLI; Chromium at 360 px with JavaScript off. Today's line is the one `hub status show` gives,
nothing scrolls sideways, axe finds no serious WCAG 2.1 AA problem, and the English link works. The
HTML+CSS weight of each kind of page is measured here and written into docs/public.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from hub.clock import utcnow
from tests.conftest import ROOT
from tests.deployed.conftest import Deployment, accessibility_problems
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import telegram_conf

OFFICE = "kota-pekalongan"
PHONE = {"width": 360, "height": 740}
#: Where the measured page weights go (between these markers of docs/public.md).
WEIGHTS = ROOT / "docs" / "public.md"
#: A screenshot of the office page at 360 px, for docs/public.md.
SHOTS = ROOT / "docs" / "public"
BEGIN, END = "<!-- weights: begin -->", "<!-- weights: end -->"


def test_office_page_on_a_360px_phone_without_javascript(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram, browser
) -> None:
    d = make_deployment(init=False, channels={"telegram": telegram_conf(fake)})
    d.cli("init", "--sample")
    data = d.workdir / "jam.json"
    data.write_text(
        json.dumps({"hours": {"monday": "08:00-11:00", "friday": "08:00-10:00"}, "daily_quota": 50})
    )
    until = (utcnow() + timedelta(days=14)).strftime("%Y-%m-%d")
    announce = ["announce", "--topic", OFFICE, "--template", "hours_changed", "--data", str(data)]
    shown = d.cli(*announce, "--until", until, "--force", "--json")  # no subscribers yet: --force
    announcement = json.loads(shown.stdout)["id"]
    d.start_run()

    context = browser.new_context(locale="id-ID", viewport=PHONE, java_script_enabled=False)
    context.set_default_timeout(15_000)
    page = context.new_page()
    # axe-core runs as a script (its promise never settles with JavaScript off): it checks each page
    # in a tab of its own, same size, scripts on; the pages themselves have none to run.
    checker = browser.new_context(locale="id-ID", viewport=PHONE)
    checker.set_default_timeout(15_000)
    axe_tab = checker.new_page()

    def accessible() -> list[str]:
        axe_tab.goto(page.url)
        return accessibility_problems(axe_tab)

    try:
        page.goto(f"{d.url}/kantor")
        assert accessible() == []
        page.get_by_role("link", name="Dindukcapil Kota Pekalongan").click()
        page.wait_for_url(f"{d.url}/kantor/{OFFICE}")
        status = json.loads(d.cli("status", "show", OFFICE, "--json").stdout)
        line = page.locator(".today .line")
        assert line.is_visible() and line.inner_text() == status["today_line"]
        assert page.get_by_role("link", name=re.compile("jam layanan baru")).get_attribute("href") == (
            f"/kantor/{OFFICE}/pengumuman/{announcement}"
        )
        telegram = page.get_by_role("link", name="Buka bot Telegram dan berlangganan")
        assert telegram.get_attribute("href") == f"https://t.me/{fake.bot_username}?start=t{OFFICE}"
        qr = d.workdir / "qr-telegram.png"  # the QR code as the phone shows it, read by a QR reader
        page.get_by_role("img", name="Kode QR: berlangganan lewat Telegram").screenshot(path=str(qr))
        assert _read_qr(qr) == telegram.get_attribute("href")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing scrolls sideways
        assert accessible() == []
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "kantor-ponsel.png"), full_page=True)

        page.get_by_role("link", name="English").click()
        page.wait_for_url(f"{d.url}/kantor/{OFFICE}?lang=en")
        # The same status in English (its wording is hub.status's, tested there; one CLI call fewer).
        assert page.locator(".today .line").inner_text().startswith("Today: ")
        assert page.locator(".today .line").inner_text() != status["today_line"]
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert accessible() == []

        page.get_by_role("link", name=re.compile("new service hours")).click()
        page.wait_for_url(f"**/pengumuman/{announcement}?lang=en")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert accessible() == []
    finally:
        context.close()
        checker.close()

    weights = {}
    for name, path in (
        ("Index of offices", "/kantor"),
        ("Office page", f"/kantor/{OFFICE}"),
        ("Announcement page", f"/kantor/{OFFICE}/pengumuman/{announcement}"),
    ):
        answer = d.api.get(path)
        assert answer.status_code == 200 and "<script" not in answer.text
        assert len(answer.content) < 50_000, (path, len(answer.content))
        again = d.api.get(path, headers={"If-None-Match": answer.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")
        weights[name] = (path, len(answer.content))
    _record(weights)


def _read_qr(image: Path) -> str:
    if shutil.which("zbarimg") is None:
        pytest.fail("zbarimg is missing: install zbar-tools (scripts/install-pdf-tools.sh)")
    done = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _record(weights: dict[str, tuple[str, int]]) -> None:
    """Replace the measured table in docs/public.md (the page's HTML with its inline CSS, no images)."""
    rows = ["| Page | Sample address | HTML + CSS |", "|---|---|---|"]
    rows += [
        f"| {name} | `{path}` | {size / 1000:.1f} kB ({size} bytes) |"
        for name, (path, size) in weights.items()
    ]
    text = WEIGHTS.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    assert rest, f"{WEIGHTS} has no {BEGIN} marker"
    WEIGHTS.write_text(head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail, encoding="utf-8")
