"""`hub doctor` as an operator runs it: a line per check, exit 0 when all pass and 1 when one fails."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from hub.cli import app
from hub.store.db import Database
from tests.conftest import PG_URL, _drop_schema, free_port, make_settings
from tests.integration.telegram.conftest import telegram_conf
from tests.workers import write_settings


def _doctor(settings_file: Path) -> tuple[int, dict[str, str]]:
    """Exit code, and each check's line by its part: ``{"redis": "FAIL redis: ... does not answer"}``."""
    result = CliRunner().invoke(app, ["--settings", str(settings_file), "doctor"])
    lines = {}
    for line in result.output.splitlines():
        mark, _, rest = line.partition(" ")
        if mark in ("ok", "FAIL"):
            lines[rest.strip().split(":", 1)[0]] = f"{mark} {rest.strip()}"
    return result.exit_code, lines


async def _migrated(url: str, schema: str | None, back_to: str | None = None) -> None:
    db = Database(url, schema=schema)
    try:
        await db.migrate()
        if back_to:  # as if this release were newer than the database it meets
            async with db.transaction() as session:
                await session.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": back_to})
    finally:
        await db.dispose()


@pytest.mark.postgres
def test_a_healthy_postgresql_deployment_passes_every_check(tmp_path, redis_url, smtp, fake):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    settings = make_settings(PG_URL, redis_url, smtp[1], schema)
    settings.channels["telegram"] = telegram_conf(fake)
    asyncio.run(_migrated(PG_URL, schema))
    try:
        code, lines = _doctor(write_settings(settings, tmp_path / "settings.toml"))
    finally:
        asyncio.run(_drop_schema(schema))
    assert code == 0, lines
    parts = ["settings", "deployment key", "database", "migrations", "clock vs database", "redis"]
    for part in [*parts, "clock vs redis", "channel email", "channel telegram"]:
        assert lines[part].startswith("ok "), lines
    assert "postgresql answers" in lines["database"]
    assert "SMTP 127.0.0.1" in lines["channel email"]
    assert lines["channel telegram"].endswith("@disdukcapil_test_bot")


def test_each_broken_part_is_a_failing_line_and_exit_1(tmp_path, sqlite_database, fake):
    """Migrations behind, Redis and the SMTP server unreachable, a bot token Telegram refuses: a FAIL
    line each, naming what to do, and the token in none of them."""
    url, _ = sqlite_database
    asyncio.run(_migrated(url, None, back_to="0010"))
    closed = free_port()
    settings = make_settings(url, f"redis://127.0.0.1:{closed}/0", closed)
    wrong = "123456:AAwrong-token-the-fake-refuses"
    settings.channels["telegram"] = telegram_conf(fake, token=wrong)
    code, lines = _doctor(write_settings(settings, tmp_path / "settings.toml"))
    assert code == 1
    assert lines["channel telegram"].startswith("FAIL ") and wrong not in str(lines)
    assert lines["settings"].startswith("ok ") and lines["database"].startswith("ok "), lines
    assert lines["migrations"].startswith("FAIL ") and "run `hub init`" in lines["migrations"]
    assert lines["redis"].startswith("FAIL ") and "does not answer" in lines["redis"]
    assert lines["channel email"].startswith("FAIL ") and str(closed) in lines["channel email"]


def test_settings_that_cannot_load_are_the_one_failing_line(tmp_path):
    bad = tmp_path / "settings.toml"
    bad.write_text('[channels.email]\nenabled = true\nport = "x"\n', encoding="utf-8")
    code, lines = _doctor(bad)
    assert code == 1
    assert list(lines) == ["settings"] and "channels.email.port" in lines["settings"]
