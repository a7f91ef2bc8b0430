"""A printed notice as an office makes one: `hub notice` writes the PDF, a citizen scans its codes.

The page code opens the office's page on the running `hub run`; the Telegram code, opened in the
(fake) Telegram app, starts the bot with its payload and the citizen is subscribed. The public copy of
the office's status notice is served as A5 under the office's pages. (The announcement notice, its
text and its public route: tests/integration/test_notices.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.deployed.conftest import Deployment
from tests.deployed.test_telegram import SUBSCRIBED, subscription_state
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import telegram_conf
from tests.integration.test_notices import PAPER, page_sizes, qr_codes

CITIZEN = 6_300_001


def test_hub_notice_prints_codes_that_open_the_page_and_subscribe_by_telegram(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram
) -> None:
    d = make_deployment(channels={"telegram": telegram_conf(fake)})
    paper = d.workdir / "status.pdf"
    printed = d.cli("notice", "--office", "kota-pekalongan", "-o", str(paper), "--size", "a5").stdout
    assert printed.startswith(f"{paper}: A5")
    assert page_sizes(paper) == [PAPER["a5"]]
    codes = qr_codes(paper, d.workdir)
    page = f"{d.url}/kantor/kota-pekalongan"
    telegram = next(c for c in codes if c != page)
    assert sorted(codes) == sorted([page, telegram])

    run = d.start_run()
    assert httpx.get(page, timeout=30).status_code == 200
    public = httpx.get(f"{d.url}/kantor/kota-pekalongan/cetak.pdf?ukuran=a5", timeout=30)
    assert public.status_code == 200 and public.headers["content-type"] == "application/pdf"
    copy = d.workdir / "public.pdf"
    copy.write_bytes(public.content)
    assert page_sizes(copy) == [PAPER["a5"]]

    link = urlsplit(telegram)
    assert (link.netloc, link.path) == ("t.me", f"/{fake.bot_username}")
    fake.add_private(CITIZEN, first_name="Citra")
    fake.inject_message(CITIZEN, f"/start {parse_qs(link.query)['start'][0]}")

    def replied() -> list[str] | None:
        assert run.poll() is None, d.log(run)[-3000:]
        return [m.visible_text for m in fake.messages(CITIZEN)] or None

    assert d.wait_for(replied, 30, "the bot's answer to /start") == [SUBSCRIBED]
    assert subscription_state(d, str(CITIZEN)) == "confirmed"
