"""The console's other pages in a real browser against `hub run` (issue 10): keyboard, axe, import, follow-up.

An admin signs in by keyboard alone (skip link, sign-in form, TOTP code, main nav); imports a CSV with a bad
row (the error table names the row and nothing is imported) and then the good rows; makes an API key whose
intake opens a case, finds the case, makes a relay code. Two approvers of one office take an announcement
through submit, check page, approval, schedule and cancel; a sent one opens its correction form pre-filled.
axe finds no serious or critical WCAG 2.1 AA problem on any page on the way; screenshots go to docs/console/.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import pytest

from tests import log_audit
from tests.deployed.conftest import (
    Deployment,
    accessibility_problems,
    browser_tab,
    checked_screenshot,
    console_user,
    first_sign_in,
)

OFFICE = "kota-pekalongan"
PASSWORD = "sandi-konsol-yang-panjang"
SUBSCRIBER = "warga.lama@mail.example.com"
#: Line 3 has no address, line 4 a locale the hub does not speak: both named, nothing imported.
BAD_CSV = "email,locale\nwarga.baru@mail.example.com,id\n,id\nwarga.lain@mail.example.com,fr\n"
GOOD_CSV = f"email\nwarga.baru@mail.example.com\n{SUBSCRIBER}\n"


def _is_focused(page: Any, selector: str) -> bool:
    return page.evaluate(
        "s => document.activeElement !== null && document.activeElement.matches(s)", selector
    )


def _tab_to(page: Any, selector: str, most: int = 30) -> None:
    """Tab until ``selector`` has the focus, with a focus ring a person can see (WCAG 2.1.1, 2.4.7)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if _is_focused(page, selector):
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
            return
    pytest.fail(f"{selector} never had the focus in {most} presses of Tab on {page.url}")


def _email_count(page: Any) -> str:
    """The subscribers page's count of confirmed email subscribers of the office's own topic."""
    row = page.locator("table[aria-labelledby=counts] tbody tr").filter(has_text=f"({OFFICE})").first
    return row.locator('td[data-label="email"]').inner_text()


def _keyboard_sign_in(page: Any, email: str, totp: pyotp.TOTP) -> None:
    """Skip link, email, password, code and the nav to the subscribers page, by Tab and Enter alone."""
    page.keyboard.press("Tab")
    assert _is_focused(page, "a.skip")
    page.keyboard.press("Enter")
    assert _is_focused(page, "main#main")
    _tab_to(page, "#email")
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    assert _is_focused(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/masuk/kode**")
    # autofocus: the one thing to type (applied once the page has loaded, a moment after the URL changed)
    page.wait_for_function("document.activeElement !== null && document.activeElement.matches('#code')")
    # Enrolment used this 30-second step's code: the next step's is the one still unused.
    page.keyboard.type(totp.at(time.time() + totp.interval))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/console/$"))
    _tab_to(page, 'nav a[href="/console/pelanggan"]')
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/pelanggan")
    assert page.locator('nav a[aria-current="page"]').inner_text() == "Pelanggan"


def _upload(page: Any, csv: str) -> None:
    page.set_input_files(
        "#file", files=[{"name": "warga.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    page.check("input[name=confirmed]")
    with page.expect_navigation():
        page.click("main form button[type=submit]")


def test_admin_by_keyboard_imports_makes_a_key_finds_a_case_makes_a_relay_code(
    deployment: Deployment, page: Any
) -> None:
    d = deployment
    d.cli("subscribe", "--topic", OFFICE, "--email", SUBSCRIBER, "--confirmed")
    admin = "admin@pekalongan.go.id"
    one_time = console_user(d, OFFICE, admin, "admin")
    d.start_run()
    first_sign_in(page, d.url, admin, one_time, PASSWORD)
    page.goto(f"{d.url}/console/")
    page.wait_for_url("**/console/akun/totp")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text().replace(" ", ""))
    log_audit.forbid(totp.secret, "TOTP secret")
    page.fill("#code", totp.now())
    page.click("main form button[type=submit]")
    page.wait_for_url("**/console/akun/totp?selesai=1")
    page.click("button.link")  # Keluar
    page.wait_for_url("**/console/masuk?keluar=1")
    _keyboard_sign_in(page, admin, totp)
    assert _email_count(page) == "1"
    checked_screenshot(page, "pelanggan")

    page.click('main a[href="/console/pelanggan/impor"]')
    checked_screenshot(page, "impor")
    _upload(page, BAD_CSV)
    problems = page.locator("table[aria-describedby=import-problems] tbody tr")
    assert [row.locator("td").all_inner_texts() for row in problems.all()] == [
        ["3", "Kolom email kosong."],
        ["4", 'Bahasa "fr" tidak dikenal: pakai id atau en.'],
    ]
    checked_screenshot(page, "impor-galat")
    page.goto(f"{d.url}/console/pelanggan")
    assert _email_count(page) == "1"
    assert page.locator("table[aria-labelledby=list] tbody tr").count() == 1  # uncached: none half-imported
    page.goto(f"{d.url}/console/pelanggan/impor")
    _upload(page, GOOD_CSV)
    assert page.locator("#import-result").inner_text() == (
        "2 baris diimpor ke Dindukcapil Kota Pekalongan: 1 pelanggan baru, 1 sudah terkonfirmasi sebelumnya."
    )
    checked_screenshot(page, "impor-selesai")
    page.click("main a.button")
    assert _email_count(page) == "2"
    assert page.locator("table[aria-labelledby=list] tbody tr").count() == 2
    assert "warga.baru@" not in page.inner_text("main")  # masked

    page.click('nav a[href="/console/kunci"]')
    assert accessibility_problems(page) == []
    page.fill("#name", "SIAK Kota Pekalongan")
    page.select_option("#role", "intake")
    page.click("main form[action='/console/kunci'] button[type=submit]")
    page.wait_for_selector("#api-key")
    assert accessibility_problems(page) == []
    key = page.locator("#api-key").inner_text()
    log_audit.forbid(key, "API key")
    intake = {"Authorization": f"Bearer {key}"}
    contacts = [{"channel": "email", "address": "pemohon@mail.example.com"}]
    opened = d.api.post(
        "/v1/applicants",
        headers=intake,
        json={"reference": "KK-2026-0042", "document": "KK", "contacts": contacts},
    )
    assert opened.status_code == 201, opened.text
    update = {"status": "ready", "pickup_place": "Loket 2"}
    ready = d.api.post(
        "/v1/applicants/KK-2026-0042/updates", headers={**intake, "Idempotency-Key": "k-1"}, json=update
    )
    assert ready.status_code == 202, ready.text
    page.goto(f"{d.url}/console/kunci")
    assert page.locator('#keys td[data-label="Terakhir dipakai"]').inner_text().endswith(" WIB")  # its use
    checked_screenshot(page, "kunci")

    page.click('nav a[href="/console/kasus"]')
    assert accessibility_problems(page) == []
    page.fill("#referensi", "KK-2026-0042")
    page.press("#referensi", "Enter")
    page.wait_for_url(re.compile(r".*/console/kasus/\d+$"))
    facts = page.locator("#case-facts dd").all_inner_texts()
    assert facts[:3] + facts[5:] == [OFFICE, "KK", "Siap diambil", "Belum dipakai", "Tidak terkunci"]
    assert page.locator("ul[aria-labelledby=contacts] li").all_inner_texts() == [
        "email: p***@mail.example.com"
    ]
    assert page.locator("ol.timeline dl").inner_text().split() == ["Tempat", "pengambilan", "Loket", "2"]
    assert opened.json()["pin"] not in page.content()
    checked_screenshot(page, "kasus")

    page.click('nav a[href="/console/relay"]')
    checked_screenshot(page, "relay")
    page.click("main form[action='/console/relay/kode'] button[type=submit]")
    page.wait_for_selector("#relay-code")
    assert accessibility_problems(page) == []

    page.goto(f"{d.url}/console/tim")
    page.click('main a[href^="/console/tim/"]:not([href$="/baru"])')
    page.wait_for_url(re.compile(r".*/console/tim/\d+$"))
    assert accessibility_problems(page) == []
    page.goto(f"{d.url}/console/audit")
    assert page.locator('td[data-label="Tindakan"]').all_inner_texts() == [
        "relay.code",
        "case.view",
        "key.create",
        "subscribers.import",
        "subscribers.import_rejected",
        "signin",
        "signout",
        "totp.enrol",
        "password.change",
        "signin",
        "user.create",
    ]

    # A phone: the counts table folds into cards, nothing needs sideways scrolling.
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{d.url}/console/pelanggan")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    checked_screenshot(page, "pelanggan-ponsel")


def _compose(page: Any, base: str, action: str, publish_at: str = "") -> str:
    """An hours announcement to the office's topic, previewed, then ``action``; its detail page's URL."""
    page.goto(f"{base}/console/pengumuman/baru?jenis=hours_changed")
    page.fill("#hours_monday", "08:00-12:00")
    page.fill("#daily_quota", "40")
    page.check(f"input[name=topics][value='{OFFICE}']")
    page.fill("#publish_at", publish_at)
    page.click("button[value=preview]")
    page.wait_for_selector("#preview")
    assert accessibility_problems(page) == []
    page.click(f"button[value={action}]")
    page.wait_for_url(re.compile(r".*/console/pengumuman/\d+$"))
    return page.url


def test_announcement_pages_a_scheduled_one_cancelled_a_sent_one_opens_its_correction(
    deployment: Deployment, browser: Any, page: Any
) -> None:
    d = deployment
    d.cli("subscribe", "--topic", OFFICE, "--email", SUBSCRIBER, "--confirmed")
    author, checker = "penulis@pekalongan.go.id", "pemeriksa@pekalongan.go.id"
    author_once, checker_once = (console_user(d, OFFICE, who, "approver") for who in (author, checker))
    run = d.start_run()
    first_sign_in(page, d.url, author, author_once, PASSWORD)
    page.goto(f"{d.url}/console/pengumuman/baru")
    assert accessibility_problems(page) == []  # the kind picker

    tomorrow = datetime.now(ZoneInfo("Asia/Jakarta")) + timedelta(days=1)
    scheduled = _compose(page, d.url, "submit", tomorrow.strftime("%Y-%m-%dT08:00"))
    assert "Menunggu persetujuan" in page.inner_text("main")
    assert accessibility_problems(page) == []
    with browser_tab(browser) as check:
        first_sign_in(check, d.url, checker, checker_once, PASSWORD)
        check.goto(scheduled)
        assert check.locator("button[value=approve]").count() == 1
        assert accessibility_problems(check) == []  # the check page, with approve and send back
        check.click("button[value=approve]")
        check.wait_for_url(scheduled)
    page.goto(scheduled)
    assert page.locator("dl.facts dd strong").inner_text() == "Terjadwal"
    assert accessibility_problems(page) == []
    page.click("button[value=cancel]")
    page.wait_for_url(scheduled)
    assert page.locator("dl.facts dd strong").inner_text() == "Dibatalkan"
    assert page.locator("button[value=cancel]").count() == 0
    assert accessibility_problems(page) == []

    sent = _compose(page, d.url, "publish")
    d.wait_for(lambda: d.mailbox.to(SUBSCRIBER), 60, "the announcement's email", run)

    def correctable() -> bool:
        page.goto(sent)
        return page.locator(f'a[href="{sent.removeprefix(d.url)}/koreksi"]').count() == 1

    d.wait_for(correctable, 30, "the correction link on the sent announcement", run)
    checked_screenshot(page, "pengumuman")
    page.click(f'a[href="{sent.removeprefix(d.url)}/koreksi"]')
    page.wait_for_url("**/koreksi")
    assert (page.input_value("#hours_monday"), page.input_value("#daily_quota")) == ("08:00-12:00", "40")
    assert page.locator("#f-targets").count() == 0  # to exactly the original's recipients
    checked_screenshot(page, "koreksi")
    page.goto(f"{d.url}/console/")
    assert accessibility_problems(page) == []
