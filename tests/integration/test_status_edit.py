# ruff: noqa: E501  (status bodies read better unwrapped)
"""Editing an office's status (issue 11) by the CLI, the API and the console: refused with the field named,
kept with its history (who, when, before and after), scoped to the key's or staff member's offices."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from hub.api.app import create_app
from hub.keys import create_key
from hub.store.models import AuditEntry, OfficeStatusHistory
from tests.conftest import SAMPLE, make_settings
from tests.console import csrf_of, make_staff, sign_in
from tests.integration.console.conftest import quick_password_hashes, sqlite_only  # noqa: F401
from tests.workers import write_settings

database = pytest.fixture(sqlite_only)
OFFICE = "kota-pekalongan"
STATUS = {
    "hours": {"senin": "08:00-12:00", "jumat": "08:00-10:00"},
    "quota": 40,
    "services": [{"key": "kk"}, {"key": "legalisir"}],
    "exceptions": [{"date": "2030-01-01", "closed": True, "note": "Tahun Baru"}],
}


@pytest.fixture
async def api(hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def _history(hub) -> list[OfficeStatusHistory]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(OfficeStatusHistory).where(OfficeStatusHistory.office_id == OFFICE)
        )
        return list(rows.scalars())


async def test_api_reads_replaces_and_keeps_history(hub, api):
    staff = {"Authorization": f"Bearer {await create_key(hub, OFFICE, 'staff', 'status')}"}
    url = f"/v1/offices/{OFFICE}/status"
    now = await api.get(url, headers=staff)
    assert now.status_code == 200 and now.headers["etag"] == f'"{now.json()["version"]}"'
    assert now.json()["weekly"]["friday"] == ["08:00-10:00"] and now.json()["quota"] == 50

    bad = await api.put(url, json={**STATUS, "exceptions": [{"date": "2030-01-02", "service": "kia", "closed": True}]},
                        headers=staff)  # fmt: skip
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("exceptions[0].service: 'kia' is not a service this office offers")
    for body, field in (({"quota": -1}, "quota"), ({"hours": {"senin": "14:00-09:00"}}, "hours.monday[0]")):
        refused = await api.put(url, json=body, headers=staff)
        assert refused.status_code == 422 and refused.json()["error"].startswith(f"{field}: ")
    assert await _history(hub) == []  # nothing refused was kept

    saved = await api.put(url, json=STATUS, headers=staff)
    assert saved.status_code == 200 and saved.json()["changed"] is True
    assert saved.json()["base"]["hours"] == {"monday": ["08:00-12:00"], "friday": ["08:00-10:00"]}
    again = await api.put(url, json=STATUS, headers=staff)
    assert again.json()["changed"] is False
    at = await api.get(f"{url}?at=2030-01-07T09:00", headers=staff)  # a Monday, office time
    assert at.json()["today_line"] == "Hari ini: buka 08.00–12.00 WIB, kuota 40 orang"
    history = (await api.get(f"{url}/history", headers=staff)).json()["items"]
    assert [(h["by"][:8], h["changed"]) for h in history] == [
        ("api-key:", ["contacts", "exceptions", "hours", "quota", "services"])
    ]
    assert history[0]["after"]["quota"] == 40 and history[0]["before"]["quota"] == 50
    async with hub.db.session() as session:
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "status.set"))
    assert audit.target == f"office:{OFFICE}" and audit.detail["changed"] == history[0]["changed"]

    other = {"Authorization": f"Bearer {await create_key(hub, 'kota-serang', 'staff', 'other')}"}
    assert (await api.put(url, json=STATUS, headers=other)).status_code == 403
    assert (await api.get("/v1/offices/no-such-office/status", headers=staff)).status_code == 404


async def test_console_editor_sees_the_field_named_and_saves(hub, api):
    client = api
    editor = f"editor@{OFFICE}.example.go.id"
    _, secret = await make_staff(hub, editor, "editor", OFFICE, "sandi-rahasia-panjang")
    assert (await sign_in(client, editor, "sandi-rahasia-panjang", secret)).status_code == 303
    page = await client.get("/console/status")
    assert page.status_code == 200 and "Hari ini:" in page.text and 'name="hours_monday"' in page.text
    form = {
        "csrf": csrf_of(page.text), "hours_monday": "08:00-11:00, 13:00-15:00", "hours_friday": "08:00-10:00",
        "quota": "30", "mode": "restricted", "urgent": "akta kematian", "note_id": "", "note_en": "",
        "exceptions": "2030-01-01 tutup Tahun Baru", "services": '[{"key": "kk"}]', "contacts": "[]",
    }  # fmt: skip
    refused = await client.post("/console/status", data={**form, "hours_monday": "08:00-25:00"})
    assert refused.status_code == 400 and 'id="hours_monday" name="hours_monday"' in refused.text
    assert 'aria-invalid="true" aria-describedby="hours_monday-error"' in refused.text
    assert "Jam berada di luar hari" in refused.text
    saved = await client.post("/console/status", data=form)
    assert saved.status_code == 303
    shown = await client.get(saved.headers["location"])
    assert "Status tersimpan" in shown.text and "akta kematian" in shown.text
    (change,) = await _history(hub)
    assert change.by == f"console:{editor}" and change.after["mode"] == "restricted"
    assert change.after["hours"]["monday"] == ["08:00-11:00", "13:00-15:00"]
    assert change.after["exceptions"] == [
        {"date": "2030-01-01", "closed": True, "note": {"id": "Tahun Baru"}}
    ]


def test_cli_set_show_and_history(tmp_path: Path, redis_url: str):
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", redis_url)
    path = str(write_settings(settings, tmp_path / "settings.toml"))
    from hub.cli import app

    runner = CliRunner()

    def hub(*args: str, code: int = 0, stdin: str | None = None) -> str:
        result = runner.invoke(app, ["--settings", path, *args], input=stdin)
        assert result.exit_code == code, result.output
        return result.output

    hub("init")
    hub("regions", "load", str(SAMPLE))
    (tmp_path / "status.json").write_text(json.dumps(STATUS), encoding="utf-8")
    assert "changed: contacts, exceptions, hours, quota, services" in hub(
        "status", "set", OFFICE, "--file", str(tmp_path / "status.json")
    )
    assert "unchanged" in hub("status", "set", OFFICE, stdin=json.dumps(STATUS))
    refused = hub("status", "set", OFFICE, stdin=json.dumps({"quota": -2}), code=1)
    assert "quota: Input should be greater than or equal to 0" in refused
    shown = json.loads(hub("status", "show", OFFICE, "--at", "2030-01-01 09:00", "--json", "--locale", "en"))
    assert shown["today_line"] == "Today: closed (Tahun Baru)" and shown["quota"] == 40
    (change,) = json.loads(hub("status", "history", OFFICE, "--json"))
    assert change["by"] == "cli" and change["before"]["quota"] == 50 and change["after"]["quota"] == 40
