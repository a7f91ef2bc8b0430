"""The announcement's console page lists its kelurahan relays: who confirmed, when and how; who did not."""

from __future__ import annotations

import re

import httpx
from argon2 import PasswordHasher

from channels.base import Inbound
from channels.testing import ScriptedChannel
from hub import announcements
from hub.api.app import create_app
from hub.console import accounts
from hub.delivery import drain
from hub.inbound import handle_inbound
from hub.relays import codes, manage
from tests.conftest import make_settings, start_hub
from tests.console import make_staff, sign_in

PASSWORD = "sandi-rahasia-panjang"


async def test_the_announcement_page_shows_which_relays_confirmed(sqlite_database, redis_url, monkeypatch):
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    url, schema = sqlite_database
    tg = ScriptedChannel(name="telegram", command_prefix="/", buttons=True)
    hub = await start_hub(make_settings(url, redis_url, None, schema), extra_channels={"telegram": tg})
    try:
        one = await manage.register(hub, "kota-pekalongan", "telegram", "-100888000001")
        two = await manage.register(hub, "kota-pekalongan", "telegram", "-100888000002")
        req = announcements.AnnouncementInput(
            template="free_text", topics=["kota-pekalongan"], data={"title": "A", "text": "B"}
        )
        ann, _ = await announcements.create(hub, req, publish=True)
        await drain(hub)
        sent = next(i for i in tg.sent if i.address == "-100888000001")
        code = codes.make_code(hub.secret, sent.delivery_id)
        press = Inbound(
            channel="telegram",
            kind="button",
            address="-100888000001",
            sender="42",
            chat_kind="group",
            data=f"rm:{code}:masjid",
        )
        await handle_inbound(hub, press)
        email = "viewer@kota-pekalongan.example.go.id"
        _, secret = await make_staff(hub, email, "viewer", "kota-pekalongan", PASSWORD)
        transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            assert (await sign_in(client, email, PASSWORD, secret)).status_code == 303
            page = (await client.get(f"/console/pengumuman/{ann.id}")).text
        section = page[
            page.index('id="relays-title"') : page.index("</section>", page.index('id="relays-title"'))
        ]
        rows = [
            [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)
            if "<td" in row
        ]
        assert "1 dari 2 relay kelurahan sudah mengonfirmasi" in section
        assert [r[:3] + r[4:] for r in rows] == [
            [f"#{one.id}", "telegram", "-1***01", "pengumuman masjid", "-", "-"],
            [f"#{two.id}", "telegram", "-1***02", "-", "-", "-"],
        ]
        assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d", rows[0][3]) and rows[1][3] == "Belum"
    finally:
        await hub.close()
