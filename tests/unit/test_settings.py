"""settings.toml, environment overrides, and another file by option."""

from __future__ import annotations

import pytest

from hub.settings import load_settings
from tests.conftest import ROOT


def test_file_then_environment(monkeypatch):
    monkeypatch.setenv("HUB_DATABASE__URL", "postgresql+asyncpg://hub@db/hub")
    monkeypatch.setenv("HUB_CHANNELS__EMAIL__PASSWORD", "from-env")
    settings = load_settings(ROOT / "settings.toml")
    assert settings.database.url == "postgresql+asyncpg://hub@db/hub"
    assert settings.channels["email"]["password"] == "from-env"
    assert settings.channels["email"]["sender"].startswith("Disdukcapil")  # the file's value stays
    assert settings.queue.batch_size == 100


def test_settings_env_var_picks_another_file(tmp_path, monkeypatch):
    other = tmp_path / "kantor.toml"
    other.write_text('[database]\nurl = "sqlite+aiosqlite:///kantor.db"\n')
    monkeypatch.setenv("HUB_SETTINGS", str(other))
    assert load_settings().database.url == "sqlite+aiosqlite:///kantor.db"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_no_secret_is_committed():
    text = (ROOT / "settings.toml").read_text()
    for line in text.splitlines():
        key = line.partition("=")[0]
        if key.strip() in {"password", "token", "secret_key", "access_token", "dlr_secret"}:
            pytest.fail(f"a secret is set in settings.toml: {key.strip()}")
