"""The console in a real browser against a real `hub run`: the first admin's way in (issue 10).

An admin made with `hub users create` signs in with the printed one-time password, must choose a new one,
must turn on TOTP (the test reads the key off the page like a person typing it into an app), signs out,
and signs in again with a code. Screenshots land in docs/console/ for docs/console.md.
"""

from __future__ import annotations

import re
import time

import pyotp

from tests import log_audit
from tests.deployed.conftest import accessibility_problems, checked_screenshot

EMAIL = "admin@kota-serang.example.go.id"
NEW_PASSWORD = "sandi-baru-untuk-konsol"


def test_first_admin_signs_in_changes_password_enrols_totp_and_signs_in_again(deployment, page):
    deployment.start_run()
    created = deployment.cli(
        "users", "create", "--office", "kota-serang", "--role", "admin", "--email", EMAIL, "--name", "Admin"
    )
    password = re.search(r"one-time password: (\S+)", created.stdout).group(1)
    log_audit.forbid(password, "one-time password")
    log_audit.forbid(NEW_PASSWORD, "staff password")
    assert f"sign in at {deployment.url}/console/" in created.stdout

    page.goto(f"{deployment.url}/console/")
    assert page.url == f"{deployment.url}/console/masuk?next=%2Fconsole%2F"
    assert page.locator("h1").inner_text() == "Masuk"
    checked_screenshot(page, "masuk")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Kata sandi").fill(password)
    page.get_by_role("button", name="Masuk").click()

    # A one-time password is changed before anything else.
    page.wait_for_url("**/console/akun/sandi")
    assert accessibility_problems(page) == []
    page.get_by_label("Kata sandi saat ini").fill(password)
    page.get_by_label("Kata sandi baru", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Ulangi kata sandi baru").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Simpan kata sandi").click()
    page.wait_for_url("**/console/akun/sandi?selesai=1")

    # An admin turns on TOTP before anything else.
    page.goto(f"{deployment.url}/console/")
    page.wait_for_url("**/console/akun/totp")
    assert page.locator(".qr svg").count() == 1
    checked_screenshot(page, "totp")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    log_audit.forbid(secret, "TOTP secret")
    totp = pyotp.TOTP(secret)
    page.get_by_label("Kode 6 angka").fill(totp.now())
    page.get_by_role("button", name="Aktifkan").click()
    page.wait_for_url("**/console/akun/totp?selesai=1")

    page.get_by_role("button", name="Keluar").click()
    page.wait_for_url("**/console/masuk?keluar=1")
    assert page.get_by_role("status").inner_text() == "Anda sudah keluar."
    assert page.context.cookies() and all(c["httpOnly"] for c in page.context.cookies())

    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Kata sandi").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Masuk").click()
    page.wait_for_url("**/console/masuk/kode**")
    checked_screenshot(page, "kode")
    # The enrolment used this 30-second step's code: the next step's is the one still unused.
    page.get_by_label("Kode 6 angka").fill(totp.at(time.time() + totp.interval))
    page.get_by_role("button", name="Verifikasi").click()
    page.wait_for_url(f"{deployment.url}/console/")
    assert page.locator("h1").first.inner_text() == "Dasbor pengumuman"
    checked_screenshot(page, "dasbor")

    page.get_by_role("link", name="Tim").click()
    page.wait_for_url("**/console/tim")
    assert page.get_by_role("cell", name=EMAIL, exact=True).count() == 1
    checked_screenshot(page, "tim")

    for path in ("/console/tim/baru", "/console/audit", "/console/akun", "/console/tidak-ada?lang=en"):
        page.goto(f"{deployment.url}{path}")
        assert accessibility_problems(page) == [], path
    page.goto(f"{deployment.url}/console/audit?lang=id")
    actions = page.locator('td[data-label="Tindakan"]').all_inner_texts()
    assert actions == ["signin", "signout", "totp.enrol", "password.change", "signin", "user.create"]
    checked_screenshot(page, "audit")

    # The same pages on a phone: nothing needs sideways scrolling.
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{deployment.url}/console/tim")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    checked_screenshot(page, "tim-ponsel")

    audit = deployment.cli("users", "list")
    assert EMAIL in audit.stdout and "admin" in audit.stdout


def test_the_accessibility_check_finds_what_it_should(page):
    """The axe check above is no formality: a page with the usual mistakes fails it."""
    page.set_content('<html><body><input type="text"><p style="color:#bbb">redup</p></body></html>')
    found = {problem.split(" ")[0] for problem in accessibility_problems(page)}
    assert found == {"color-contrast", "document-title", "html-has-lang", "label"}
