"""Logs carry no secrets and no citizen's address (issue 9, hole 4), whatever the level.

Each test configures logging as ``hub`` commands do and reads what reaches the terminal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from hub.logs import configure, safe_path, secret_values
from hub.settings import Settings

BOT_TOKEN = "123456789:AAH-bot-token-of-the-office"
SMTP_PASSWORD = "smtp-pass-7f3e"
ACCESS = '%s - "%s %s HTTP/%s" %d'  # uvicorn's access line


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, config = logging.getLogger(), structlog.get_config()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("hub", "channels", "uvicorn.access")}
    # As in a fresh `hub run`: an in-process uvicorn of another test gave its loggers their own handlers
    # and stopped them propagating to the root, where the hub's handler is.
    uvicorn = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access")]
    kept = [(logger.propagate, logger.handlers[:]) for logger in uvicorn]
    for logger in uvicorn:
        logger.propagate, logger.handlers[:] = True, []
    yield
    for logger, (propagate, own) in zip(uvicorn, kept, strict=True):
        logger.propagate, logger.handlers[:] = propagate, own
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)
    structlog.configure(**config)


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_access_lines_keep_the_path_and_drop_query_strings_and_link_tokens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO")
    access = logging.getLogger("uvicorn.access")
    webhook = "/v1/channels/sms/webhook?kind=mo&k=mo-secret-123&from=%2B6281234567890&text=PIN+482913"
    access.info(ACCESS, "127.0.0.1:5000", "GET", webhook, "1.1", 200)
    access.info(ACCESS, "127.0.0.1:5000", "GET", "/v1/confirm/eyJzdWIiOjF9.c2lnbmF0dXJl", "1.1", 200)
    access.info(ACCESS, "127.0.0.1:5000", "POST", "/v1/applicants/KTP-2031-0042/updates", "1.1", 202)
    assert _printed(capsys) == (
        '127.0.0.1:5000 - "GET /v1/channels/sms/webhook HTTP/1.1" 200\n'
        '127.0.0.1:5000 - "GET /v1/confirm/*** HTTP/1.1" 200\n'
        '127.0.0.1:5000 - "POST /v1/applicants/***/updates HTTP/1.1" 202\n'
    )
    assert safe_path("/v1/unsubscribe/abc.def?x=1") == "/v1/unsubscribe/***"
    assert safe_path("/v1/stats") == "/v1/stats"


def test_libraries_stay_at_warning_when_the_hub_logs_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure("DEBUG")
    for name in ("telegram.ext.Updater", "httpx", "httpcore.http11", "nio.rooms", "aiosmtplib", "arq.worker"):
        logging.getLogger(name).debug("library says %s", BOT_TOKEN)
        logging.getLogger(name).info("library says %s", BOT_TOKEN)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("httpx").warning("library warns")
    logging.getLogger("channels.sms").debug("sms: hub says")
    assert _printed(capsys) == "library warns\nsms: hub says\n"


def test_a_setting_can_lower_the_libraries_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", libraries="DEBUG")
    logging.getLogger("httpx").debug("GET https://example.test/")
    assert _printed(capsys) == "GET https://example.test/\n"


def _fail(password: str) -> None:
    connection = {"host": "smtp.example", "password": password}
    raise ConnectionError(f"cannot reach {connection['host']}")


@pytest.mark.parametrize("json_logs", [False, True])
def test_tracebacks_show_no_local_variables(capsys: pytest.CaptureFixture[str], json_logs: bool) -> None:
    configure("INFO", json_logs=json_logs)
    try:
        _fail(SMTP_PASSWORD)
    except ConnectionError:
        structlog.get_logger("hub").exception("send_failed")
        logging.getLogger("channels.email").exception("email: send failed")
    printed = _printed(capsys)
    assert printed.count("ConnectionError: cannot reach smtp.example") == 2, printed
    assert printed.count("Traceback (most recent call last)") == 2, printed
    assert SMTP_PASSWORD not in printed
    if json_logs:
        assert json.loads(printed.splitlines()[0])["event"] == "send_failed"


@pytest.mark.parametrize("json_logs", [False, True])
def test_known_secrets_are_redacted_from_every_line(
    capsys: pytest.CaptureFixture[str], json_logs: bool
) -> None:
    configure("DEBUG", json_logs=json_logs, secrets=[BOT_TOKEN, SMTP_PASSWORD, "short"])
    structlog.get_logger("hub").info("telegram_call", url=f"https://api.telegram.org/bot{BOT_TOKEN}/getMe")
    logging.getLogger("channels.email").warning("email: login with %r refused", SMTP_PASSWORD)
    printed = _printed(capsys)
    assert BOT_TOKEN not in printed and SMTP_PASSWORD not in printed
    assert "https://api.telegram.org/bot[redacted]/getMe" in printed
    assert printed.endswith("email: login with '[redacted]' refused\n")


def test_secret_values_are_found_in_every_channel_table() -> None:
    settings = Settings.model_validate(
        {
            "hub": {"secret_key": "hub-secret-key"},
            "database": {"url": "postgresql+asyncpg://hub:db-password@db/hub"},
            "redis": {"url": "redis://:redis-password@127.0.0.1:6379/0"},
            "channels": {
                "email": {"enabled": True, "host": "smtp.example", "password": SMTP_PASSWORD},
                "telegram": {"token": BOT_TOKEN, "webhook_secret": "tg-webhook-secret", "username": "bot"},
                "matrix": {"access_token": "syt_matrix_token", "user_id": "@bot:example.org"},
                "sms": {
                    "dlr_secret": "dlr-secret",
                    "mo_secret": "mo-secret",
                    "gateways": [
                        {"driver": "kannel", "username": "hub", "password": "kannel-pass"},
                        {"driver": "http", "headers": {"Authorization": "Bearer aggregator-key"}},
                    ],
                },
            },
        }
    )
    assert sorted(secret_values(settings)) == sorted(
        [
            "hub-secret-key",
            "db-password",
            "redis-password",
            SMTP_PASSWORD,
            BOT_TOKEN,
            "tg-webhook-secret",
            "syt_matrix_token",
            "dlr-secret",
            "mo-secret",
            "kannel-pass",
            "Bearer aggregator-key",
            "aggregator-key",
        ]
    )
