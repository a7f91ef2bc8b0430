# ruff: noqa: E501  (request bodies and expected errors read better unwrapped)
"""Announcement times and SMS length, by the HTTP API and by the CLI, as staff give them (defects 1, 14).

A time given with an offset is that instant; a time without one is the office's wall clock (WIB, WITA or
WIT). Whatever was given comes back unchanged from preview, draft, publish and read-back, and a message
scheduled by it goes out at that instant, not one UTC offset early.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hub.api.app import create_app
from hub.cli import app
from hub.render import format_day
from hub.settings import Settings
from tests.conftest import ROOT, SAMPLE, free_port, make_settings
from tests.workers import write_settings

ZONES_FILE = ROOT / "tests" / "data" / "offices_wita_wit.toml"
#: One office per zone: WIB, WITA, WIT.
OFFICES = {
    "kota-pekalongan": "Asia/Jakarta",
    "kota-makassar": "Asia/Makassar",
    "kota-jayapura": "Asia/Jayapura",
}
FIELDS = ("publish_at", "valid_from", "valid_until")
SMS = {
    "enabled": True,
    "sender": "DUKCAPIL",
    "max_segments": 2,
    "dlr_secret": "test-dlr",
    "gateways": [
        {"driver": "kannel", "name": "kannel", "url": f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms",
         "username": "hub", "password": "test"},
    ],
}  # fmt: skip


@dataclass
class Installation:
    """A hub initialised by its own CLI, with the sample offices and two offices outside Java."""

    folder: Path
    settings_file: Path
    keys: dict[str, str]

    def cli(self, *args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(app, ["--settings", str(self.settings_file), *args])
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.folder / "hub.db") as db:
            return db.execute(sql).fetchall()


def _with_sms(settings: Settings) -> Settings:
    data = settings.model_dump(by_alias=True)
    data["channels"]["sms"] = SMS
    return Settings.model_validate(data)


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Installation:
    folder = tmp_path_factory.mktemp("times")
    # Email to a port nobody listens on: no worker runs here, so nothing is ever sent.
    settings = make_settings(f"sqlite+aiosqlite:///{folder / 'hub.db'}", redis_server, free_port())
    path = write_settings(_with_sms(settings), folder / "settings.toml")
    inst = Installation(folder, path, {})
    inst.cli("init")
    inst.cli("regions", "load", str(SAMPLE))
    inst.cli("regions", "load", str(ZONES_FILE))
    for office in OFFICES:
        inst.keys[office] = inst.cli("keys", "create", "--office", office, "--role", "staff").stdout.strip()
    return inst


@pytest.fixture(scope="module")
def api(installation: Installation) -> Iterator[TestClient]:
    with TestClient(create_app(settings_path=str(installation.settings_file))) as client:
        yield client


# ---------------------------------------------------------------------------------------------------------
# Times as staff give them: naive (office time) or with any offset, minutes or seconds.

OFFSETS = st.sampled_from([None, UTC, ZoneInfo("Asia/Jakarta"), ZoneInfo("Asia/Makassar"), ZoneInfo("Asia/Jayapura")]) | (
    st.integers(-12 * 4, 14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
)  # fmt: skip
WALL = st.datetimes(min_value=datetime(2031, 1, 1), max_value=datetime(2040, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


@st.composite
def given_times(draw: st.DrawFn) -> dict[str, datetime]:
    start = draw(WALL)
    tz = draw(OFFSETS)
    start = start.replace(tzinfo=tz) if tz is not None else start
    until = start + draw(st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=60)))
    publish = start - draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
    return {"publish_at": publish.replace(microsecond=0), "valid_from": start, "valid_until": until}


def _instant(value: datetime, office: str) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(OFFICES[office]))).astimezone(UTC)


def _assert_same_times(shown: dict[str, Any], given: dict[str, datetime], office: str) -> None:
    """Each time shown is the instant given, in the office's zone (so a naive one reads as written)."""
    for name in FIELDS:
        back = datetime.fromisoformat(shown[name])
        assert back.astimezone(UTC) == _instant(given[name], office), (name, shown[name], given[name])
        assert back.utcoffset() == datetime.now(ZoneInfo(OFFICES[office])).utcoffset(), shown[name]
        if given[name].tzinfo is None:
            assert back.replace(tzinfo=None) == given[name]


def _stored(installation: Installation, announcement_id: int) -> dict[str, datetime]:
    [row] = installation.rows(
        f"SELECT a.publish_at, a.valid_from, a.valid_until, m.send_at, m.not_after FROM announcements a "
        f"LEFT JOIN messages m ON m.announcement_id = a.id WHERE a.id = {int(announcement_id)}"
    )
    names = (*FIELDS, "send_at", "not_after")
    return {n: datetime.fromisoformat(v).replace(tzinfo=UTC) for n, v in zip(names, row, strict=True) if v}


def _validity_line(given: dict[str, datetime], office: str) -> str:
    tz = OFFICES[office]
    start, end = (format_day(_instant(given[n], office), "id", tz) for n in ("valid_from", "valid_until"))
    return f"Berlaku {start} sampai {end}."


def _body(office: str, given: dict[str, datetime]) -> dict[str, Any]:
    return {
        "template": "free_text",
        "topics": [office],
        "data": {"title": "Libur", "text": "Kantor tutup."},
        **{name: value.isoformat() for name, value in given.items()},
    }


HYPOTHESIS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(when=given_times(), office=st.sampled_from(sorted(OFFICES)))
def test_times_round_trip_unchanged_through_the_api(
    api: TestClient, installation: Installation, when: dict[str, datetime], office: str
) -> None:
    headers = {"Authorization": f"Bearer {installation.keys[office]}"}
    preview = api.post("/v1/announcements/preview", json=_body(office, when), headers=headers)
    assert preview.status_code == 200, preview.text
    _assert_same_times(preview.json(), when, office)
    email = preview.json()["channels"]["email"]["renderings"]["id"]["text"]
    assert email.split("\n\n")[2] == _validity_line(when, office)  # the dates citizens read

    draft = api.post("/v1/announcements", json={**_body(office, when), "action": "draft"}, headers=headers)
    assert draft.status_code == 201, draft.text
    announcement_id = draft.json()["id"]
    _assert_same_times(api.get(f"/v1/announcements/{announcement_id}", headers=headers).json(), when, office)

    published = api.post(f"/v1/announcements/{announcement_id}/publish", headers=headers)
    assert published.status_code == 200, published.text
    assert published.json()["state"] == "scheduled"
    send_at = datetime.fromisoformat(published.json()["send_at"])
    assert send_at.astimezone(UTC) == _instant(when["publish_at"], office)
    shown = api.get(f"/v1/announcements/{announcement_id}", headers=headers).json()
    assert shown["state"] == "scheduled"
    _assert_same_times(shown, when, office)
    stored = _stored(installation, announcement_id)
    assert stored["send_at"] == stored["publish_at"] == _instant(when["publish_at"], office)
    assert stored["not_after"] == stored["valid_until"] == _instant(when["valid_until"], office)


def _cli_time(value: datetime) -> str:
    """How staff type it: ``2031-03-23 08:00`` in office time, or ISO 8601 with its offset."""
    return value.isoformat(sep=" ") if value.tzinfo is None else value.isoformat()


@HYPOTHESIS
@given(when=given_times(), office=st.sampled_from(sorted(OFFICES)))
def test_times_round_trip_unchanged_through_the_cli(
    installation: Installation, when: dict[str, datetime], office: str
) -> None:
    data = installation.folder / "libur.json"
    data.write_text(json.dumps({"title": "Libur", "text": "Kantor tutup."}), encoding="utf-8")
    args = ["announce", "--topic", office, "--template", "free_text", "--data", str(data)]
    args += ["--at", _cli_time(when["publish_at"]), "--from", _cli_time(when["valid_from"])]
    args += ["--until", _cli_time(when["valid_until"])]

    preview = json.loads(installation.cli(*args, "--dry-run", "--json").stdout)
    _assert_same_times(preview, when, office)
    draft = json.loads(installation.cli(*args, "--draft", "--json").stdout)
    assert draft["state"] == "draft"
    _assert_same_times(draft, when, office)
    published = json.loads(installation.cli("publish", str(draft["id"]), "--json").stdout)
    assert published["state"] == "scheduled"
    _assert_same_times(published, when, office)
    shown = json.loads(installation.cli("show", str(draft["id"]), "--json").stdout)
    _assert_same_times(shown, when, office)
    stored = _stored(installation, draft["id"])
    assert stored["send_at"] == _instant(when["publish_at"], office)


def test_a_valid_until_a_few_hours_ahead_in_office_time_is_accepted(
    api: TestClient, installation: Installation
):
    """Defect 1 as reported: "now + 3 h" in WIT was read as UTC+9 twice and refused as past."""
    office = "kota-jayapura"
    now = datetime.now(ZoneInfo(OFFICES[office])).replace(tzinfo=None, microsecond=0)
    body = {**_body(office, {}), "valid_until": (now + timedelta(hours=3)).isoformat(), "action": "draft"}
    created = api.post(
        "/v1/announcements", json=body, headers={"Authorization": f"Bearer {installation.keys[office]}"}
    )
    assert created.status_code == 201, created.text


# ---------------------------------------------------------------------------------------------------------
# Defect 14 (SMS): over the segment limit is refused at preview and publish, before anything is stored.

LONG = {
    "title": "Perubahan layanan",
    "text": "Layanan tatap muka di kantor kecamatan dihentikan sementara dan dipusatkan di kantor dinas. "
    * 4,
}
REFUSED = (
    "the sms rendering in 'id' needs 3 segments, more than the 2 allowed (channels.sms.max_segments): "
    "shorten the announcement"
)


def test_sms_over_the_segment_limit_is_refused_by_the_api(
    api: TestClient, installation: Installation
) -> None:
    headers = {"Authorization": f"Bearer {installation.keys['kota-pekalongan']}"}
    body = {"template": "free_text", "topics": ["kota-pekalongan"], "data": LONG}
    before = installation.rows("SELECT count(*) FROM announcements")
    for path, extra in (("/v1/announcements/preview", {}), ("/v1/announcements", {"action": "publish"}),
                        ("/v1/announcements", {"action": "draft"})):  # fmt: skip
        response = api.post(path, json={**body, **extra}, headers=headers)
        assert (response.status_code, response.json()) == (422, {"error": REFUSED}), path
    assert installation.rows("SELECT count(*) FROM announcements") == before


def test_sms_over_the_segment_limit_is_refused_by_the_cli(installation: Installation) -> None:
    data = installation.folder / "long.json"
    data.write_text(json.dumps(LONG), encoding="utf-8")
    before = installation.rows("SELECT count(*) FROM announcements")
    args = ["announce", "--topic", "kota-pekalongan", "--data", str(data)]
    for extra in (["--dry-run"], ["--force"], ["--draft"]):
        result = installation.cli(*args, *extra, ok=False)
        assert result.exit_code == 1, result.output
        assert re.sub(r"\s+", " ", result.stderr).strip() == f"error: {REFUSED}"
    assert installation.rows("SELECT count(*) FROM announcements") == before
