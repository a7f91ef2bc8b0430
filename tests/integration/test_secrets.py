"""Secrets at rest (issue 9, hole 2): a copy of the database gives back no PIN, code or deployment key.

The saved answer of ``POST /v1/applicants`` (replayed to an intake system that retries) is sealed with a
key made of the deployment key and the caller's Idempotency-Key, which the database keeps only hashed.
The deployment key lives in settings or in a 0600 key file made by ``hub init``; an installation whose
key an older release kept in the database has it moved out at the next start. ``hub secret rotate``
makes a new key and keeps the old one for verification, so keys, PINs and links already out keep working.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from typer.testing import CliRunner

from hub import announcements, applicants, signing, subscriptions
from hub.api.app import create_app
from hub.cli import app as cli_app
from hub.context import Hub, build_hub
from hub.delivery import drain
from hub.keys import authenticate, create_key
from hub.settings import load_settings
from hub.store.models import ApiKey, ApplicantCase, Base, Endpoint, Subscription
from tests.conftest import SAMPLE, make_settings
from tests.workers import write_settings

TOPIC = "kota-pekalongan"
RECEIPT_BODY = {"reference": "KTP-2026-0099", "document": "KTP-el", "locale": "id", "contacts": []}
IDEMPOTENCY_KEY = "loket-3-permohonan-0099-percobaan"


# -- helpers -------------------------------------------------------------------------------------------


def _install(folder: Path, redis_url: str, smtp_port: int | None = None, **hub: Any) -> Path:
    """A settings file for a hub in ``folder`` whose key is in ``folder/.hub-secret`` (no secret_key)."""
    settings = make_settings(f"sqlite+aiosqlite:///{folder / 'hub.db'}", redis_url, smtp_port)
    section = settings.hub.model_copy(
        update={"secret_key": "", "secret_key_file": str(folder / ".hub-secret"), **hub}
    )
    return write_settings(settings.model_copy(update={"hub": section}), folder / "settings.toml")


def _cli(settings_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `hub` command as an operator types it, in its own process (its own log configuration)."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "--settings", str(settings_file), *args],
        cwd=settings_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _invoke(settings_file: Path, *args: str) -> str:
    result = CliRunner().invoke(cli_app, ["--settings", str(settings_file), *args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _keys_in(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def _kv(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "hub.db") as db:
        return dict(db.execute("select key, value from hub_kv").fetchall())


async def _dump(hub: Hub) -> str:
    """Every value of every column of every table, as text (JSON columns included)."""
    values: list[str] = []
    async with hub.db.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                values += [str(value) for value in row]
        values += [str(v) for v in (await session.execute(text("select * from alembic_version"))).scalars()]
    return "\n".join(values)


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hub.test")


async def _open_case(hub: Hub, api_key: str, body: dict[str, Any] = RECEIPT_BODY) -> httpx.Response:
    async with _client(hub) as api:
        return await api.post(
            "/v1/applicants",
            json=body,
            headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": IDEMPOTENCY_KEY},
        )


# -- the saved idempotent answer ----------------------------------------------------------------------


async def test_a_database_copy_holds_no_pin_code_or_idempotency_key_and_the_retry_gets_the_receipt(hub):
    api_key = await create_key(hub, TOPIC, "intake", "loket")
    first = await _open_case(hub, api_key)
    assert first.status_code == 201, first.text
    receipt = first.json()

    dump = await _dump(hub)
    assert receipt["pin"] not in dump
    assert receipt["link_code"] not in dump
    assert IDEMPOTENCY_KEY not in dump
    assert hub.secret.decode() not in dump

    again = await _open_case(hub, api_key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == receipt
    changed = await _open_case(hub, api_key, {**RECEIPT_BODY, "document": "KK"})
    assert changed.status_code == 422
    assert changed.json() == {"error": "Idempotency-Key was already used with a different request body"}


# -- where the deployment key lives -------------------------------------------------------------------


def test_hub_init_makes_a_0600_key_file_and_keeps_no_key_in_the_database(tmp_path, redis_url):
    settings_file = _install(tmp_path, redis_url)
    key_file = tmp_path / ".hub-secret"

    assert _invoke(settings_file, "init") == (
        f"database ready: sqlite+aiosqlite:///{tmp_path / 'hub.db'}\n"
        f"deployment key: {key_file} (readable by its owner only; copy it to every host of this hub)\n"
    )
    assert _mode(key_file) == 0o600
    [key] = _keys_in(key_file)
    assert len(key) >= 40
    assert "secret_key" not in _kv(tmp_path)
    with sqlite3.connect(tmp_path / "hub.db") as db:
        assert not any(key in str(row) for row in db.execute("select * from hub_kv"))

    _invoke(settings_file, "init")  # again: the same key
    assert _keys_in(key_file) == [key]


def test_without_a_key_the_hub_refuses_to_start_and_names_the_setting(tmp_path, redis_url):
    settings_file = _install(tmp_path, redis_url)
    _invoke(settings_file, "init")
    (tmp_path / ".hub-secret").unlink()

    result = _cli(settings_file, "keys", "create", "--office", TOPIC, "--role", "intake")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: no deployment key: hub.secret_key is empty and the key file {tmp_path / '.hub-secret'} "
        "(hub.secret_key_file) does not exist. Run `hub init` to create it, copy it from the host that "
        "has it, or set hub.secret_key (HUB_HUB__SECRET_KEY)\n"
    )
    assert not (tmp_path / ".hub-secret").exists()


def test_a_key_an_older_release_kept_in_the_database_moves_to_the_key_file_once(tmp_path, redis_url):
    legacy = "legacy-key-that-an-older-release-kept-in-hub-kv"
    # An installation of an older release: the key in the database, API keys hashed with it.
    older = _install(tmp_path, redis_url, secret_key=legacy)
    _invoke(older, "init")
    _invoke(older, "regions", "load", str(SAMPLE))
    api_key = _invoke(older, "keys", "create", "--office", TOPIC, "--role", "intake").strip()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        db.execute("insert into hub_kv (key, value) values ('secret_key', ?)", (legacy,))
    assert not (tmp_path / ".hub-secret").exists()

    settings_file = _install(tmp_path, redis_url)  # this release: no key in the settings
    first = _cli(settings_file, "secret", "status")
    assert first.returncode == 0, first.stderr
    logged = first.stdout + first.stderr  # the hub's own log lines go to stdout
    assert logged.count("secret_key_moved_out_of_database") == 1 and legacy not in logged
    key_file = tmp_path / ".hub-secret"
    assert _mode(key_file) == 0o600 and _keys_in(key_file) == [legacy]
    assert "secret_key" not in _kv(tmp_path)

    second = _cli(settings_file, "secret", "status")
    assert "secret_key_moved" not in second.stdout + second.stderr
    assert second.stdout == (
        f"deployment key: {key_file}\n"
        "previous keys (verify only): 0\n"
        f"key file {key_file}: mode 0600\n"
        "made with the keys above: 1 API keys, 0 applicant PINs, 0 saved retry answers\n"
    )

    async def still_works() -> None:
        hub = await build_hub(load_settings(settings_file), with_redis=False)
        try:
            assert hub.secret == legacy.encode()
            assert await authenticate(hub, api_key) is not None
        finally:
            await hub.close()

    asyncio.run(still_works())


# -- rotation ----------------------------------------------------------------------------------------


def test_rotation_keeps_old_api_keys_pins_links_and_retries_working_and_uses_the_new_key(
    tmp_path, redis_url, smtp
):
    mailbox, smtp_port = smtp
    settings_file = _install(tmp_path, redis_url, smtp_port)
    key_file = tmp_path / ".hub-secret"
    _invoke(settings_file, "init")
    _invoke(settings_file, "regions", "load", str(SAMPLE))
    api_key = _invoke(settings_file, "keys", "create", "--office", TOPIC, "--role", "intake").strip()
    [old] = _keys_in(key_file)
    address = "warga@mail.example.com"

    async def before() -> dict[str, Any]:
        hub = await build_hub(load_settings(settings_file))
        try:
            receipt = await _open_case(hub, api_key)
            assert receipt.status_code == 201, receipt.text
            await subscriptions.subscribe(hub, TOPIC, "email", address, confirmed=True)
            request = announcements.AnnouncementInput(
                template="free_text", topics=[TOPIC], data={"title": "Info", "text": "Info: isi pesan."}
            )
            await announcements.create(hub, request, publish=True)
            await drain(hub)
            return receipt.json()
        finally:
            await hub.close()

    receipt = asyncio.run(before())
    [mail] = [m for m in mailbox.to(address) if m["List-Unsubscribe"]]
    unsubscribe = mail["List-Unsubscribe"].strip().strip("<>").removeprefix("http://hub.test")

    assert _invoke(settings_file, "secret", "rotate") == (
        f"new deployment key written to {key_file} (mode 0600); it signs and hashes from the next start\n"
        "the old key is kept in the file as a previous key: it verifies, it never signs or hashes.\n"
        "Re-keyed now: nothing stored can be, because the values are not held, only their hashes:\n"
        "  1 API keys keep working through the previous key; issue new ones (`hub keys create`) and "
        "revoke these to move them to the new key\n"
        "  1 applicant PINs keep working through the previous key (printed on receipts, they cannot be "
        "changed)\n"
        "  1 saved retry answers replay through the previous key (kept for 24 h)\n"
        "  confirm and unsubscribe links already sent keep working through the previous key\n"
        "  receipt deep-link codes do not depend on the key\n"
        "If the old key may have leaked, whoever has it can make links the hub accepts while it is kept: "
        "run `hub secret rotate --drop-old` once the old API keys are replaced.\n"
        "Restart every hub process (API, workers) now; copy the key file to each host running one.\n"
    )
    assert _mode(key_file) == 0o600
    new, kept = _keys_in(key_file)
    assert kept == old and new != old

    async def after() -> None:
        hub = await build_hub(load_settings(settings_file))
        try:
            assert (hub.secret, hub.previous_secrets) == (new.encode(), (old.encode(),))
            # What was made with the old key still works ...
            again = await _open_case(hub, api_key)
            assert again.status_code == 201 and again.json() == receipt
            check = await applicants.check_pin(hub, RECEIPT_BODY["reference"], receipt["pin"])
            assert check.outcome == "found" and check.case.reference == RECEIPT_BODY["reference"]
            async with _client(hub) as api:
                assert (await api.post(unsubscribe)).status_code == 200
            async with hub.db.session() as session:
                endpoint = await session.scalar(select(Endpoint).where(Endpoint.address == address))
                states = await session.scalars(
                    select(Subscription.state).where(Subscription.endpoint_id == endpoint.id)
                )
                assert list(states) == ["unsubscribed"]
            # ... and what is made now uses the new key only.
            fresh = await create_key(hub, TOPIC, "intake", "baru")
            _, prefix, secret = fresh.split("_", 2)
            opened = await applicants.open_case(
                hub, TOPIC, applicants.CaseInput(reference="KK-2026-0100", document="KK")
            )
            async with hub.db.session() as session:
                key_hash = await session.scalar(select(ApiKey.key_hash).where(ApiKey.prefix == prefix))
                pin_hash = await session.scalar(
                    select(ApplicantCase.pin_hash).where(ApplicantCase.reference == "KK-2026-0100")
                )
            assert key_hash == signing.digest(new.encode(), f"key:{secret}")
            assert pin_hash == signing.digest(new.encode(), f"pin:{opened.pin}")
            token = signing.sign(hub.secret, "unsubscribe", 1, 2)
            assert signing.verify(new.encode(), "unsubscribe", token) == ["1", "2"]
        finally:
            await hub.close()

    asyncio.run(after())

    assert _invoke(settings_file, "secret", "rotate", "--drop-old") == (
        f"new deployment key written to {key_file} (mode 0600); it signs and hashes from the next start\n"
        "previous keys dropped: nothing made before this rotation verifies any more:\n"
        "  2 API keys stop working: issue new ones (`hub keys create`) and revoke these\n"
        "  2 applicant PINs stop working: they cannot be re-issued (receipt codes still work)\n"
        "  1 saved retry answers can no longer be replayed (a retry answers 409)\n"
        "  confirm and unsubscribe links in emails already sent stop working\n"
        "Restart every hub process (API, workers) now; copy the key file to each host running one.\n"
    )
    assert len(_keys_in(key_file)) == 1 and _keys_in(key_file)[0] not in (old, new)

    async def after_drop() -> None:
        hub = await build_hub(load_settings(settings_file), with_redis=False)
        try:
            assert hub.previous_secrets == ()
            assert await authenticate(hub, api_key) is None
        finally:
            await hub.close()

    asyncio.run(after_drop())


def test_the_upgrade_deletes_receipts_saved_in_clear_and_hashes_the_saved_idempotency_keys(tmp_path):
    """Answers an older release saved in clear: one with a PIN goes, the others stay under hashed keys."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from hub.api.deps import idempotency_row_key
    from hub.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.exec_driver_sql(  # (a plain SQLite connection does not check foreign keys: no office needed)
            "insert into api_keys (id, office_id, role, name, prefix, key_hash, revoked, created_at) "
            "values (1, 'o', 'intake', 'k', 'p', 'h', 0, '2026-12-01 00:00:00')"
        )
        for key, response in (
            ("receipt-retry", '{"reference": "A-1", "pin": "482913", "link_code": "cAbCdEfGhIjKlMnOp"}'),
            ("update-retry", '{"reference": "A-1", "status": "ready", "message_id": 7}'),
        ):
            conn.exec_driver_sql(
                "insert into idempotent_requests values (1, ?, 'r', 201, ?, '2026-12-04 00:00:00')",
                (key, response),
            )
        command.upgrade(config, "head")
    with sqlite3.connect(tmp_path / "hub.db") as db:
        rows = db.execute("select key, response from idempotent_requests").fetchall()
    engine.dispose()
    assert rows == [
        (idempotency_row_key("update-retry"), '{"reference": "A-1", "status": "ready", "message_id": 7}')
    ]
