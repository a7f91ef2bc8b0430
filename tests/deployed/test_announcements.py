"""Announcements as staff make them on a running hub: by the HTTP API of `hub run` and by the `hub` CLI.

Defect 1: times come back as given (office time without an offset, the instant with one) in every
zone; defect 14 (SMS): a text over the segment limit is refused before anything is stored; defects 7
and 8: a new kind, published by the CLI, arrives in the mailbox exactly as its golden file says.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ROOT, free_port
from tests.deployed.conftest import Deployment
from tests.unit.test_golden import EXAMPLES, GOLDEN

ZONES = {
    "kota-pekalongan": "Asia/Jakarta",
    "kota-makassar": "Asia/Makassar",
    "kota-jayapura": "Asia/Jayapura",
}
FIELDS = ("publish_at", "valid_from", "valid_until")
#: (office, times as typed): naive is the office's wall clock; an offset is an instant elsewhere.
CASES = [
    ("kota-makassar", {"publish_at": "2031-03-23T07:00:00", "valid_from": "2031-03-23T08:00:00",
                       "valid_until": "2031-04-06T15:30:00"}),
    ("kota-jayapura", {"publish_at": "2031-03-23T07:00:00+07:00", "valid_from": "2031-03-23T00:00:00+09:00",
                       "valid_until": "2031-03-24T23:59:00+08:00"}),
    ("kota-pekalongan", {"publish_at": "2031-12-31T23:30:00", "valid_from": "2032-01-01T00:00:00Z",
                         "valid_until": "2032-01-02T06:00:00+09:00"}),
]  # fmt: skip
SMS = {
    "enabled": True,
    "sender": "DUKCAPIL",
    "max_segments": 2,
    "dlr_secret": "deployed-dlr",
    "gateways": [{"driver": "kannel", "name": "kannel", "username": "hub", "password": "test",
                  "url": f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms"}],
}  # fmt: skip


def _instant(text: str, office: str) -> datetime:
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=ZoneInfo(ZONES[office]))).astimezone(UTC)


def _same_times(shown: dict[str, Any], given: dict[str, str], office: str) -> None:
    for name in FIELDS:
        back = datetime.fromisoformat(shown[name])
        assert back == _instant(given[name], office), (name, shown[name], given[name])
        assert back.utcoffset() == datetime.now(ZoneInfo(ZONES[office])).utcoffset()
        if datetime.fromisoformat(given[name]).tzinfo is None:
            assert shown[name].startswith(given[name]), (name, shown[name])


def _staff(deployment: Deployment) -> dict[str, dict[str, str]]:
    deployment.cli("regions", "load", str(ROOT / "tests" / "data" / "offices_wita_wit.toml"))
    keys = {}
    for office in ZONES:
        key = deployment.cli("keys", "create", "--office", office, "--role", "staff").stdout.strip()
        keys[office] = {"Authorization": f"Bearer {key}"}
    return keys


def _write(deployment: Deployment, name: str, data: dict[str, Any]) -> Path:
    path = deployment.workdir / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _count(deployment: Deployment, table: str) -> int:
    with sqlite3.connect(deployment.workdir / "hub.db") as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_times_round_trip_through_the_running_hub_and_the_cli(deployment: Deployment) -> None:
    keys = _staff(deployment)
    deployment.start_run()
    data = {"title": "Libur", "text": "Kantor tutup."}
    for office, given in CASES:
        body = {"template": "free_text", "topics": [office], "data": data, **given}
        preview = deployment.api.post("/v1/announcements/preview", json=body, headers=keys[office])
        assert preview.status_code == 200, preview.text
        _same_times(preview.json(), given, office)
        draft = deployment.api.post(
            "/v1/announcements", json={**body, "action": "draft"}, headers=keys[office]
        )
        assert draft.status_code == 201, draft.text
        url = f"/v1/announcements/{draft.json()['id']}"
        _same_times(deployment.api.get(url, headers=keys[office]).json(), given, office)
        published = deployment.api.post(f"{url}/publish", headers=keys[office])
        assert published.json()["state"] == "scheduled", published.text
        assert datetime.fromisoformat(published.json()["send_at"]) == _instant(given["publish_at"], office)
        _same_times(deployment.api.get(url, headers=keys[office]).json(), given, office)

    data_file = _write(deployment, "libur.json", data)
    for office, given in CASES[:2]:
        typed = [given[n].replace("T", " ") if "+" not in given[n] else given[n] for n in FIELDS]
        args = ["announce", "--topic", office, "--template", "free_text", "--data", str(data_file)]
        args += ["--at", typed[0], "--from", typed[1], "--until", typed[2], "--json"]
        _same_times(json.loads(deployment.cli(*args, "--dry-run").stdout), given, office)
        draft = json.loads(deployment.cli(*args, "--draft").stdout)
        _same_times(draft, given, office)
        published = json.loads(deployment.cli("publish", str(draft["id"]), "--json").stdout)
        assert published["state"] == "scheduled"
        _same_times(published, given, office)
        _same_times(json.loads(deployment.cli("show", str(draft["id"]), "--json").stdout), given, office)


def test_sms_over_the_segment_limit_is_refused_by_api_and_cli_before_anything_is_stored(
    deployment: Deployment,
) -> None:
    deployment.configure(channels={"sms": SMS})
    keys = _staff(deployment)
    deployment.start_run()
    data = {"title": "Perubahan layanan", "text": "Layanan tatap muka di kantor kecamatan dipusatkan. " * 6}
    refused = (
        "the sms rendering in 'id' needs 3 segments, more than the 2 allowed (channels.sms.max_segments): "
        "shorten the announcement"
    )
    body = {"template": "free_text", "topics": ["kota-pekalongan"], "data": data}
    for path, action in (("/v1/announcements/preview", None), ("/v1/announcements", "publish"),
                         ("/v1/announcements", "draft")):  # fmt: skip
        response = deployment.api.post(
            path, json={**body, **({"action": action} if action else {})}, headers=keys["kota-pekalongan"]
        )
        assert (response.status_code, response.json()) == (422, {"error": refused})
    data_file = _write(deployment, "long.json", data)
    for extra in ("--dry-run", "--force", "--draft"):
        result = deployment.cli(
            "announce", "--topic", "kota-pekalongan", "--data", str(data_file), extra, check=False
        )
        assert (result.returncode, " ".join(result.stderr.split())) == (1, f"error: {refused}")
    assert _count(deployment, "announcements") == 0 and _count(deployment, "messages") == 0


@pytest.mark.parametrize("example", ["sukabumi_sijempol"])
def test_a_suspension_published_by_the_cli_arrives_as_its_golden_file_says(
    deployment: Deployment, example: str
) -> None:
    template, office, data, _ = EXAMPLES[example]
    people = _write(deployment, "people.csv", {})
    people.write_text("email,locale\nwarga@example.com,id\nresident@example.com,en\n", encoding="utf-8")
    deployment.cli("subscribers", "import", str(people), "--topic", office, "--confirmed")
    data_file = _write(deployment, "data.json", data)
    deployment.cli("announce", "--topic", office, "--template", template, "--data", str(data_file))
    deployment.cli("worker", "--burst", timeout=180)
    for address, locale in (("warga@example.com", "id"), ("resident@example.com", "en")):
        [mail] = deployment.mailbox.to(address)
        golden = (GOLDEN / "announcements" / example / f"email.{locale}.txt").read_text(encoding="utf-8")
        subject, _, rest = golden.partition("\n")
        text = rest.split("----- text\n", 1)[1].split("\n----- html\n", 1)[0]
        body = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert mail["Subject"] == subject.removeprefix("subject: ")
        # The whole message as rendered; the footer's per-recipient link and topic are filled in at send.
        assert body.split("\n\n--\n")[0] == text.split("\n\n--\n")[0]
