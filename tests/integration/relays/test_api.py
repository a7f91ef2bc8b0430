"""The relay routes of the API: an office's key lists, pauses, resumes and removes its own relays and reads
who confirmed; another office's relay or announcement is 404, as an unknown one."""

from __future__ import annotations

import httpx

from channels.testing import ScriptedChannel
from hub import announcements
from hub.api.app import create_app
from hub.delivery import drain
from hub.keys import create_key
from hub.relays import manage
from tests.conftest import make_settings, start_hub


async def test_relay_routes_act_within_the_keys_office(sqlite_database, redis_url) -> None:
    url, schema = sqlite_database
    tg = ScriptedChannel(name="telegram", command_prefix="/", buttons=True)
    hub = await start_hub(make_settings(url, redis_url, None, schema), extra_channels={"telegram": tg})
    try:
        relay = await manage.register(hub, "kota-pekalongan", "telegram", "-100777000001")
        theirs = await manage.register(hub, "kota-serang", "telegram", "-100777000002")
        staff = {"Authorization": f"Bearer {await create_key(hub, 'kota-pekalongan', 'staff', 'staff')}"}
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api:
            listed = (await api.get("/v1/relays", headers=staff)).json()["items"]
            assert listed == [
                {
                    "id": relay.id,
                    "office": "kota-pekalongan",
                    "channel": "telegram",
                    "address": "-1***01",
                    "state": "active",
                    "reason": None,
                }
            ]
            paused = await api.post(f"/v1/relays/{relay.id}/pause", headers=staff)
            assert (paused.status_code, paused.json()["state"]) == (200, "paused")
            req = announcements.AnnouncementInput(
                template="free_text", topics=["kota-pekalongan"], data={"title": "A", "text": "B"}
            )
            ann, _ = await announcements.create(hub, req, publish=True)
            await drain(hub)
            assert tg.sent == []  # a paused relay receives nothing
            assert (await api.post(f"/v1/relays/{relay.id}/resume", headers=staff)).json()[
                "state"
            ] == "active"
            for method, path in (
                ("POST", f"/v1/relays/{theirs.id}/pause"),
                ("DELETE", f"/v1/relays/{theirs.id}"),
                ("POST", "/v1/relays/99999/resume"),
                ("GET", "/v1/announcements/99999/relays"),
            ):
                answer = await api.request(method, path, headers=staff)
                assert answer.status_code == 404 and "error" in answer.json(), path
            assert (await api.get(f"/v1/relays/{relay.id}/pause")).status_code == 405
            assert (await api.post(f"/v1/relays/{relay.id}/pause")).status_code == 401
            shown = (await api.get(f"/v1/announcements/{ann.id}/relays", headers=staff)).json()
            assert (shown["announcement_id"], shown["total"], shown["relays"]) == (ann.id, 0, [])  # not sent
            removed = await api.delete(f"/v1/relays/{relay.id}", headers=staff)
            assert removed.json()["state"] == "removed"
            assert (await api.get("/v1/relays", headers=staff)).json()["items"] == []
    finally:
        await hub.close()
