"""`hub users` and `hub init --sample`: accounts made on the command line, one-time passwords printed once."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

from argon2 import PasswordHasher

from tests.conftest import SAMPLE, make_settings
from tests.workers import write_settings


def _cli(tmp_path, redis_url):
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", redis_url)
    path = write_settings(settings, tmp_path / "settings.toml")

    def run(*args: str, code: int = 0) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", "--settings", str(path), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == code, result.stderr
        return result.stdout + result.stderr

    return run


def _rows(tmp_path, sql: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "hub.db") as db:
        return db.execute(sql).fetchall()


def test_init_sample_makes_a_demo_admin_once_and_says_how_to_sign_in(tmp_path, redis_url):
    run = _cli(tmp_path, redis_url)
    first = run("init", "--sample")
    assert "console: http://hub.test/console/" in first
    password = re.search(r"demo admin: admin@kota-serang\.example\.go\.id, one-time password: (\S+)", first)
    assert password, first
    [(hashed, role, office, must_change)] = _rows(
        tmp_path, "SELECT password_hash, role, office_id, must_change_password FROM staff_users"
    )
    assert PasswordHasher().verify(hashed, password.group(1))
    assert (role, office, must_change) == ("admin", "kota-serang", 1)
    again = run("init", "--sample")
    assert "hub users reset-password admin@kota-serang.example.go.id" in again
    assert "one-time password" not in again
    assert _rows(tmp_path, "SELECT count(*) FROM staff_users") == [(1,)]


def test_users_create_list_and_reset_password(tmp_path, redis_url):
    run = _cli(tmp_path, redis_url)
    run("init")
    run("regions", "load", str(SAMPLE))
    created = run(
        "users", "create", "--office", "kota-pekalongan", "--role", "approver", "--email", "Ana@X.go.id"
    )
    assert "user ana@x.go.id (approver, office kota-pekalongan) created" in created
    first = re.search(r"one-time password: (\S+)", created).group(1)
    assert "error: unknown office 'nowhere'" in run(
        "users", "create", "--office", "nowhere", "--email", "b@x.go.id", code=1
    )
    assert "role must be one of viewer, editor, approver, admin" in run(
        "users", "create", "--office", "kota-serang", "--role", "boss", "--email", "b@x.go.id", code=1
    )
    assert "ana@x.go.id already has an account" in run(
        "users", "create", "--office", "kota-serang", "--email", "ana@x.go.id", code=1
    )
    listing = run("users", "list")
    assert "ana@x.go.id" in listing and "approver" in listing and "one-time password" in listing
    reset = run("users", "reset-password", "ana@x.go.id")
    second = re.search(r"one-time password: (\S+)", reset).group(1)
    [(hashed,)] = _rows(tmp_path, "SELECT password_hash FROM staff_users")
    assert second != first and PasswordHasher().verify(hashed, second)
    assert "no console user 'zz@x.go.id'" in run("users", "reset-password", "zz@x.go.id", code=1)
    log = _rows(tmp_path, "SELECT staff_email, office_id, action, detail FROM audit_log ORDER BY id")
    assert [(who, office, action, json.loads(detail)) for who, office, action, detail in log] == [
        ("cli", "kota-pekalongan", "user.create", {"email": "ana@x.go.id", "role": "approver"}),
        ("cli", "kota-pekalongan", "user.reset_password", {"totp": False}),
    ]
