"""The console in a real browser against `hub run` and `hub worker`: compose, preview, submit, approve, done.

An editor of a seed office (data/offices.toml, loaded by `hub init`) composes an hours announcement,
previews every channel and submits it; a second user, an approver, approves it on the check page; the
worker delivers it to the SMTP sink and the Telegram fake; the dashboard follows it to done. Both users are
made by `hub users create` and change their one-time password at first sign-in, as real staff do.
Screenshots of the main screens go to docs/console/ for docs/console.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.deployed.conftest import SCREENSHOTS, Deployment, console_user, first_sign_in
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import telegram_conf

OFFICE = "kota-pekalongan"
CHAT = 6_300_001
CITIZEN = "warga.pekalongan@mail.example.com"
NEW_PASSWORD = "sandi-baru-yang-panjang"


def _screenshot(page: Any, name: str) -> None:
    """A whole-page screenshot in which the email frames show, with the email's own styles applied.

    Chromium renders a sandboxed frame (opaque origin) in a process of its own and paints it only while
    it is in the viewport: a full-page screenshot of a page taller than the window shows such frames
    blank (a person scrolling to them sees them). So the window is made as tall as the page first.
    """
    bodies = page.frame_locator("iframe.email")
    assert page.locator("iframe.email").count() > 0
    for i in range(page.locator("iframe.email").count()):
        # The layout's inline styles apply (the page's CSP lists their hashes): 640 px wide at most.
        assert bodies.nth(i).locator("body").evaluate("b => getComputedStyle(b).maxWidth") == "640px"
    window = page.viewport_size
    page.set_viewport_size({"width": window["width"], "height": page.evaluate("document.body.scrollHeight")})
    page.wait_for_timeout(300)  # the frames' processes paint
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    page.set_viewport_size(window)


def test_editor_composes_approver_approves_deliveries_arrive_dashboard_shows_done(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram, browser: Any, page: Any
) -> None:
    d = make_deployment(channels={"telegram": telegram_conf(fake)})
    d.cli("subscribe", "--topic", OFFICE, "--email", CITIZEN, "--confirmed")
    fake.add_private(CHAT)
    d.cli("subscribe", "--topic", OFFICE, "--channel", "telegram", "--address", str(CHAT), "--confirmed")
    editor_password = console_user(d, OFFICE, "editor@pekalongan.go.id", "editor")
    approver_password = console_user(d, OFFICE, "approver@pekalongan.go.id", "approver")
    procs = [d.start_run(), d.start_worker()]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    first_sign_in(page, d.url, "editor@pekalongan.go.id", editor_password, NEW_PASSWORD)
    page.goto(f"{d.url}/console/pengumuman/baru")
    page.select_option("#jenis", "hours_changed")
    page.click("main form button[type=submit]")
    for day, hours in (("monday", "08:00-11:00"), ("tuesday", "08:00-11:00"), ("friday", "08:00-10:00")):
        page.fill(f"#hours_{day}", hours)
    page.fill("#daily_quota", "50")
    page.fill("#contacts", "KK dan KTP-el | KK and KTP-el = 0858-7031-0341")
    page.check(f"input[name=topics][value='{OFFICE}']")
    page.click("button[value=preview]")
    preview = page.locator("#preview")
    assert "email · 1 penerima" in preview.inner_text() and "telegram · 1 penerima" in preview.inner_text()
    assert "Senin–Selasa: 08.00–11.00 WIB" in preview.inner_text()
    # The email as its HTML renders, in a sandboxed frame (no scripts, no access to the console).
    email = page.frame_locator("iframe.email").last.locator("body")
    assert "Jam layanan berubah" in email.inner_text()
    _screenshot(page, "composer-preview.png")
    page.click("button[value=submit]")
    page.wait_for_url(re.compile(r".*/console/pengumuman/\d+$"))
    detail_url = page.url
    assert "Menunggu persetujuan" in page.inner_text("main")
    assert page.locator("button[value=approve]").count() == 0  # not the author's to approve

    approver = browser.new_context(locale="id-ID", viewport={"width": 1280, "height": 800})
    approver.set_default_timeout(15_000)
    try:
        check = approver.new_page()
        first_sign_in(check, d.url, "approver@pekalongan.go.id", approver_password, NEW_PASSWORD)
        check.goto(detail_url)
        assert "Pemeriksaan sebelum terbit" in check.inner_text("main")
        _screenshot(check, "check-page.png")
        check.click("button[value=approve]")
        check.wait_for_url(detail_url)
        assert "galat" not in check.url
    finally:
        approver.close()

    d.wait_for(lambda: d.mailbox.to(CITIZEN), 60, "the email to arrive", procs[1])
    d.wait_for(lambda: fake.messages(CHAT), 60, "the Telegram message to arrive", procs[1])
    [mail] = d.mailbox.to(CITIZEN)
    assert "08.00–11.00 WIB" in mail.get_body(preferencelist=("plain",)).get_content()
    assert "Kuota: 50 orang per hari." in fake.messages(CHAT)[0].visible_text
    announcement = detail_url.rsplit("/", 1)[1]

    def shows_done() -> bool:
        page.goto(f"{d.url}/console/?fase=done")
        return f'href="/console/pengumuman/{announcement}"' in page.content()

    d.wait_for(shows_done, 60, "the dashboard to show the announcement done", procs[1])
    assert "1 dari 1 selesai" in page.inner_text("main")
    page.goto(f"{d.url}/console/")
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    page.goto(detail_url)
    assert "Selesai" in page.inner_text("main")
