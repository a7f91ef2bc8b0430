"""Channel settings as an operator gives them: settings.toml, then HUB_* environment variables (strings).

Each adapter validates its ``[channels.<name>]`` table with its own pydantic model when the hub starts;
a wrong value stops the hub with one line naming the key and what was expected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from channels.base import Content, Outbound, Sent
from hub.context import load_channels
from hub.ratelimit import RedisPacer
from hub.settings import load_settings
from tests.conftest import ROOT, Mailbox

FILE = """\
[channels.email]
enabled = true
host = "127.0.0.1"
port = {port}
sender = "Disdukcapil <no-reply@disdukcapil.example.go.id>"
use_tls = true
allow_test_domains = true

[channels.matrix]
enabled = true
homeserver = "http://127.0.0.1:9"
user_id = "@dukcapil:localhost"
device_id = "HUBTEST"
access_token = "not-used"
"""


def settings_file(tmp_path: Path, port: int = 25) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(FILE.format(port=port), encoding="utf-8")
    return path


async def test_use_tls_false_from_the_environment_turns_tls_off(
    tmp_path: Path, smtp: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    box, port = smtp  # a plain SMTP server: a TLS handshake with it fails
    monkeypatch.setenv("HUB_CHANNELS__EMAIL__USE_TLS", "false")
    monkeypatch.setenv("HUB_CHANNELS__MATRIX__ENABLED", "false")
    email = load_channels(load_settings(settings_file(tmp_path, port)))["email"]
    item = Outbound(1, "warga@example.com", Content(text="Kantor buka pukul 08.00.", subject="Jam layanan"))
    try:
        outcomes = [outcome async for _, outcome in email.send([item], pacer=None)]  # type: ignore[arg-type]
    finally:
        await email.close()
    assert [type(o) for o in outcomes] == [Sent]
    assert [m["Subject"] for m in box.messages] == ["Jam layanan"]


async def test_a_matrix_rate_from_the_environment_paces_sends(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio import Redis

    monkeypatch.setenv("HUB_CHANNELS__MATRIX__RATE_PER_SECOND", "5")
    matrix = load_channels(load_settings(settings_file(tmp_path)))["matrix"]
    redis = Redis.from_url(redis_url)
    try:
        await RedisPacer(redis, "t-settings").wait([matrix.rate])  # type: ignore[attr-defined]
    finally:
        await redis.aclose()
    assert matrix.rate.count == 5.0  # type: ignore[attr-defined]


def hub_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "--settings", str(settings_file(tmp_path)), *args],
        cwd=tmp_path,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"HUB_CHANNELS__EMAIL__PORT": "dua-lima"},
            "error: channels.email.port: Input should be a valid integer, unable to parse string as an "
            "integer (got 'dua-lima')",
        ),
        (
            {"HUB_CHANNELS__MATRIX__RATE_PER_SECOND": "0"},
            "error: channels.matrix.rate_per_second: Input should be greater than 0 (got '0')",
        ),
        (
            {"HUB_CHANNELS__EMAIL__USE_TLS": "mungkin"},
            "error: channels.email.use_tls: Input should be a valid boolean, unable to interpret input "
            "(got 'mungkin')",
        ),
        (
            {"HUB_CHANNELS__MATRIX__DEVICE_ID": ""},
            "error: channels.matrix.device_id: required, not set",
        ),
    ],
)
def test_a_wrong_value_stops_the_hub_with_the_key_named(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = hub_cli(tmp_path, "topics", env=env)
    assert (result.returncode, result.stderr.strip()) == (1, expected)


def test_every_channel_table_in_the_committed_settings_file_is_valid() -> None:
    """With only the secrets added that belong in the environment, every table validates as written."""
    from channels.base import load_channel_class

    secrets = {
        "email": {},
        "telegram": {"token": "123:abc"},
        "matrix": {"access_token": "syt_x"},
        "sms": {"dlr_secret": "x"},
        "whatsapp": {"token": "x", "phone_number_id": "1", "app_secret": "x", "verify_token": "x"},
    }
    tables = load_settings(ROOT / "settings.toml").channels
    assert sorted(tables) == sorted(secrets)
    for name, table in tables.items():
        table = {**table, **secrets[name]}
        if name == "sms":
            table["gateways"] = [{**g, "password": "x"} for g in table["gateways"]]
        load_channel_class(name).validate_settings(table)
