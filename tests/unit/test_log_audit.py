"""The log audit (tests/log_audit.py) finds what it is for, in every form, and fails a run that leaks.

The scan is tried on files made here; a whole pytest run (two xdist workers) with planted leaks must
exit non-zero naming each file, line and kind, without printing the values, and find nothing in what
is fine (masks, a library's debug line the hub holds back). A clean run passing is the suite itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.log_audit import MARKER, scan

ROOT = Path(__file__).resolve().parents[2]
PIN, CODE, SMTP_PASSWORD = "482913", "cAb3dE5fG7hJ9kL2m", "smtp-pass-7f3e"


def _audit_dir(tmp_path: Path, files: dict[str, list[str]], watched: list[Path] = ()) -> Path:
    for sub in ("tests", "processes", "forbidden", "watched"):
        (tmp_path / sub).mkdir()
    for name, lines in files.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    forbidden = [("PIN", PIN), ("deep-link code", CODE), ("settings channels.email.password", SMTP_PASSWORD)]
    (tmp_path / "forbidden" / "1.jsonl").write_text(
        "".join(json.dumps({"kind": kind, "value": value}) + "\n" for kind, value in forbidden)
    )
    (tmp_path / "watched" / "1.txt").write_text("".join(f"{path}\n" for path in watched))
    return tmp_path


def test_the_scan_finds_each_kind_in_each_form_and_passes_masks(tmp_path: Path) -> None:
    directory, outside = tmp_path / "audit", tmp_path / "deployment" / "run-0.log"
    directory.mkdir()
    outside.parent.mkdir()
    outside.write_text('2026-12-04T10:00:00.482913Z [info] sent to=+62*******432 chat="w***@example.com"\n')
    outside.write_text(outside.read_text() + "GET /v1/channels/sms/webhook?from=%2B6281298765432\n")
    lines = [
        f"{MARKER}tests/x.py::test_one",
        "INFO channels.sms: sms: sent to +62 812-9876-5432",
        "INFO hub: lacak pin=482913 ref=KTP-1",
        "2026-12-04T10:00:00.482913Z [info] pid=1482913 sent to +62*******432",  # timestamp, pid: no PIN
        "at 0x7f482913ba90, server process [482913], message_id=482913",  # an address, a pid, an id
        f"{MARKER}tests/x.py::test_two",
        "WARNING channels.email: login smtp-pass-7f3e refused for warga@example.com",
        "sender no-reply@disdukcapil.example.go.id, masked w***@example.com, code cAb3dE5fG7hJ9kL2m",
        "typed 0812-9876-5432 and 6281298765432 and key hub_0a1b2c3d_AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "https://api.telegram.org/bot123456789:AAFakeTokenForLoopbackTestsOnly_abcdef/getMe",
        "other code cZz9Yy8Xx7Ww6Vv5U, but not connectionRefused nor 2026-12-08T08:12:34",
    ]
    _audit_dir(directory, {"tests/101.log": lines}, [outside])
    findings = scan(directory)
    assert [(f.file, f.line, f.kind, f.test) for f in findings] == [
        ("tests/101.log", 2, "phone number (+62...)", "tests/x.py::test_one"),
        ("tests/101.log", 3, "PIN", "tests/x.py::test_one"),
        ("tests/101.log", 7, "settings channels.email.password", "tests/x.py::test_two"),
        ("tests/101.log", 7, "email address", "tests/x.py::test_two"),
        ("tests/101.log", 8, "deep-link code", "tests/x.py::test_two"),
        ("tests/101.log", 9, "phone number (08...)", "tests/x.py::test_two"),
        ("tests/101.log", 9, "phone number (62...)", "tests/x.py::test_two"),
        ("tests/101.log", 9, "API key", "tests/x.py::test_two"),
        ("tests/101.log", 10, "bot token", "tests/x.py::test_two"),
        ("tests/101.log", 11, "deep-link code", "tests/x.py::test_two"),
        (str(outside), 2, "phone number (+62...)", ""),
    ]
    assert findings[2].excerpt == (
        "WARNING channels.email: login «settings channels.email.password» refused for «email address»"
    )
    shown = "\n".join(map(str, findings))
    for secret in (PIN, CODE, SMTP_PASSWORD, "9876-5432", "warga@", "AAFakeToken", "AbCdEfGhIj"):
        assert secret not in shown


def _run_pytest(tmp_path: Path, tests: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_planted.py").write_text(tests)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}  # the audit folder it keeps
    # Only the plugins the run needs: schemathesis, hypothesis and the rest take seconds per process.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    plugins = ["-p", "xdist.plugin", "-p", "tests.log_audit", "-p", "no:cacheprovider"]
    command = [sys.executable, "-m", "pytest", *plugins, *args]
    return subprocess.run(
        [*command, "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


PLANTED = """
import logging, subprocess, sys
import structlog
from tests import log_audit

def test_stdlib_debug_of_the_hubs_own_logger():
    logging.getLogger("channels.sms").debug("sms: sent to %s", "+6281234567890")

def test_structlog_line_with_a_forbidden_value():
    log_audit.forbid("s3cret-smtp-pass", "SMTP password")
    structlog.get_logger("hub").info("smtp_login", password="s3cret-smtp-pass")

def test_a_subprocess_output():
    with log_audit.output_file("worker").open("wb") as out:
        code = "print('mailed warga.rahasia@example.com')"
        subprocess.run([sys.executable, "-c", code], stdout=out, check=True)

def test_masks_and_libraries_held_at_warning():
    logging.getLogger("hub").info("sent to +62*******890 and w***@example.com")
    structlog.get_logger("hub").debug("sent", to="+62*******890")
    logging.getLogger("httpx").debug("library at DEBUG: +6281234567890")  # held at WARNING: not written
"""


def test_a_run_that_leaks_fails_naming_file_line_and_kind_but_not_the_value(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, PLANTED, "-n", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "4 passed" in output and "log audit: 3 finding(s)" in output, output
    reported = sorted(
        (line.split("/", 1)[0], line.split(": ", 1)[1]) for line in output.splitlines() if ".log:" in line
    )
    assert reported == [
        ("processes", "email address"),
        ("tests", "SMTP password (during test_planted.py::test_structlog_line_with_a_forbidden_value)"),
        ("tests", "phone number (+62...) (during test_planted.py::test_stdlib_debug_of_the_hubs_own_logger)"),
    ], output
    for secret in ("+6281234567890", "s3cret-smtp-pass", "warga.rahasia@example.com"):
        assert secret not in output
