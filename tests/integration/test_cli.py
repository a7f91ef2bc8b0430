"""The `hub` command line, run as a user runs it: a subprocess with a settings file."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from tests.conftest import SAMPLE, make_settings
from tests.workers import write_settings


@pytest.fixture(scope="module")
def prepared_db(tmp_path_factory) -> Path:
    """One initialised database with the sample offices; each test works on a copy."""
    folder = tmp_path_factory.mktemp("base")
    settings = make_settings(f"sqlite+aiosqlite:///{folder / 'hub.db'}", "redis://127.0.0.1:6379/15")
    path = write_settings(settings, folder / "settings.toml")
    for args in (["init"], ["regions", "load", str(SAMPLE)]):
        subprocess.run(
            [sys.executable, "-m", "hub.cli", "--settings", str(path), *args],
            check=True,
            capture_output=True,
            cwd=folder,
            timeout=120,
        )
    return folder / "hub.db"


@pytest.fixture
def cli(tmp_path, redis_url, smtp, prepared_db):
    shutil.copy(prepared_db, tmp_path / "hub.db")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", redis_url, smtp[1])
    path = write_settings(settings, tmp_path / "settings.toml")

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", "--settings", str(path), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def test_help_on_every_command():
    runner = CliRunner()
    for args in (
        [],
        ["announce"],
        ["worker"],
        ["subscribers", "import"],
        ["status"],
        ["run"],
        ["init"],
        ["regions", "load"],
        ["keys", "create"],
        ["relays", "code"],
        ["subscribe"],
        ["cancel"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_init_and_load_are_idempotent(cli):
    assert "database ready" in cli("init").stdout
    assert "0 new topics" in cli("regions", "load", str(SAMPLE)).stdout


def test_announce_publish_drain_and_status(cli, tmp_path, smtp):
    mailbox = smtp[0]
    (tmp_path / "people.csv").write_text("email,locale\nsatu@mail.example.com,id\ndua@mail.example.com,en\n")
    assert (
        "imported 2 rows: 2 new"
        in cli("subscribers", "import", "people.csv", "--topic", "kota-pekalongan", "--confirmed").stdout
    )
    (tmp_path / "hours.json").write_text(
        json.dumps(
            {
                "hours": {
                    "monday": "08:00-11:00",
                    "tuesday": "08:00-11:00",
                    "wednesday": "08:00-11:00",
                    "thursday": "08:00-11:00",
                    "friday": "08:00-10:00",
                },
                "daily_quota": 50,
                "health_protocol": [
                    {"id": "jaga jarak antrean", "en": "distance in the queue"},
                    {"id": "cuci tangan", "en": "hand-washing"},
                    {"id": "masker", "en": "masks"},
                    {"id": "cek suhu", "en": "temperature check"},
                ],
            }
        )
    )
    preview = cli(
        "announce",
        "--topic",
        "kota-pekalongan",
        "--template",
        "hours_changed",
        "--data",
        "hours.json",
        "--dry-run",
    ).stdout
    assert (
        "recipients: 2" in preview
        and "- Jumat: 08.00–10.00 WIB" in preview
        and "- Friday: 08:00–10:00 WIB" in preview
    )
    assert mailbox.messages == []

    published = cli(
        "announce",
        "--topic",
        "kota-pekalongan",
        "--template",
        "hours_changed",
        "--data",
        "hours.json",
        "--until",
        "2099-01-01",
    ).stdout
    message_id = published.split("message ")[1].split()[0]
    cli("worker", "--burst")
    status = json.loads(cli("status", message_id, "--json").stdout)
    assert status["totals"]["sent"] == 2 and status["done"]
    by_locale = {m["Content-Language"]: m for m in mailbox.messages}
    assert "Kuota: 50 orang per hari." in by_locale["id"].get_body(("plain",)).get_content()
    assert "Quota: 50 people a day." in by_locale["en"].get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (["subscribe", "--topic", "kota-serang", "--email", "not-an-address"], {}, "invalid email address"),
        (["subscribe", "--topic", "nowhere", "--email", "a@mail.example.com"], {}, "unknown topic 'nowhere'"),
        (
            ["announce", "--topic", "kota-serang", "--template", "free_text", "--data", "bad.json"],
            {"bad.json": "{not json"},
            "bad.json: not valid JSON",
        ),
        (
            ["announce", "--topic", "kota-serang", "--template", "free_text", "--data", "d.json"],
            {"d.json": '{"title": "a"}'},
            "text: Field required",
        ),
        (
            [
                "announce",
                "--topic",
                "kota-serang",
                "--template",
                "free_text",
                "--data",
                "d.json",
                "--from",
                "2030-02-01",
                "--until",
                "2030-01-01",
            ],
            {"d.json": '{"title": "a", "text": "b"}'},
            "valid-until must be after valid-from",
        ),
        (["announce", "--topic", "kota-serang", "--template", "nope"], {}, "unknown template 'nope'"),
        # Every user error is a HubError, caught once: one line, exit 1 (issue 8).
        (["relays", "code", "--office", "nowhere"], {}, "unknown office 'nowhere'"),
        (
            ["keys", "create", "--office", "kota-serang", "--role", "boss"],
            {},
            "role must be one of intake, staff, not 'boss'",
        ),
        (
            ["subscribe", "--topic", "kota-serang", "--channel", "fax", "--address", "1"],
            {},
            "channel 'fax' is not enabled (enabled: email)",
        ),
        (
            ["regions", "load", "broken.toml"],
            {"broken.toml": "[[office]]\nid = 'x'\n"},
            "office #1: missing or empty 'name'",
        ),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_created(cli, tmp_path, smtp, args, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = cli(*args, ok=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    with sqlite3.connect(tmp_path / "hub.db") as db:
        for table in ("announcements", "messages", "deliveries", "subscriptions", "endpoints"):
            assert db.execute(f"select count(*) from {table}").fetchone() == (0,), table


def test_import_reports_every_bad_row_and_imports_nothing(cli, tmp_path):
    """Every bad row is named with its line number (not only the first), and nothing is imported."""
    (tmp_path / "rows.csv").write_text(
        "email,locale\n"
        "ok@mail.example.com,id\n"
        "broken,id\n"
        "juga@mail.example.com,fr\n"
        ",en\n"
        "fine@mail.example.com,en\n"
        "lagi-salah@,id\n"
    )
    result = cli("subscribers", "import", "rows.csv", "--topic", "kota-serang", ok=False)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 4 bad rows, nothing imported:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["line 3", "line 4", "line 5", "line 7"]
    assert lines[2] == "  line 4: locale 'fr' is not one of id, en"
    assert lines[3] == "  line 5: empty email"
    assert lines[1].startswith("  line 3: invalid email address")
    with sqlite3.connect(tmp_path / "hub.db") as db:
        for table in ("subscriptions", "endpoints", "messages"):
            assert db.execute(f"select count(*) from {table}").fetchone() == (0,), table


def test_telegram_import_stores_group_chats_as_groups(tmp_path, redis_url, prepared_db):
    """Negative Telegram chat ids are groups (paced at Telegram's group limit), positive ones people."""
    shutil.copy(prepared_db, tmp_path / "hub.db")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", redis_url)
    settings.channels["telegram"] = {
        "enabled": True,
        "token": "123456:TEST-TOKEN",
        "base_url": "http://127.0.0.1:9/bot",
        "username": "disdukcapil_test_bot",
        "mode": "webhook",
        "webhook_secret": "s3cret-for-tests",
    }
    path = write_settings(settings, tmp_path / "settings.toml")
    (tmp_path / "chats.csv").write_text("address\n-1001234567890\n-4242\n777000\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "--settings",
            str(path),
            "subscribers",
            "import",
            "chats.csv",
            "--topic",
            "kota-serang",
            "--channel",
            "telegram",
            "--confirmed",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "hub.db") as db:
        kinds = dict(db.execute("select address, kind from endpoints where channel = 'telegram'").fetchall())
    assert kinds == {"-1001234567890": "group", "-4242": "group", "777000": "person"}
