"""Structured logs (structlog): key=value on a terminal, JSON lines when ``log.json`` is set.

Logs are read by whoever runs the office's server, so they carry no secrets and no citizen's address:
- libraries (python-telegram-bot, httpx, nio, uvicorn, SQLAlchemy...) are held at ``log.libraries``
  (WARNING) even when the hub logs at DEBUG: at DEBUG they write bot tokens, URLs and whole messages;
- the web server's access log shows paths without query strings (webhooks carry the SMS gateway's
  secret, phone numbers and typed PINs there) and without the tokens of citizens' links;
- tracebacks are plain, never with local variables (rich's show them, passwords included);
- as a last line of defence, every known secret value is replaced by ``[redacted]`` in every line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

if TYPE_CHECKING:
    from hub.settings import Settings

#: The hub's own loggers: these follow ``log.level``; every other logger is a library's.
OWN = ("hub", "channels", "uvicorn.access")
#: Path segments that are secrets themselves (signed links) or identify a citizen's case.
_SECRET_PATHS = re.compile(r"^(/v1/(?:confirm|unsubscribe|applicants)/)[^/?]+")
#: Keys of channel tables (at any depth: gateways, headers, bodies) whose values are secrets.
_SECRET_KEYS = re.compile(r"pass|secret|token|key|auth", re.IGNORECASE)
#: Shorter values are too likely to be ordinary words; a secret that short is a weak secret anyway.
MIN_SECRET = 6
_secrets: set[str] = set()


def configure(
    level: str = "INFO", json_logs: bool = False, libraries: str = "WARNING", secrets: Iterable[str] = ()
) -> None:
    """Called by every ``hub`` command with the ``[log]`` settings and the secrets the settings hold."""
    redact_values(*secrets)
    level, libraries = level.upper(), libraries.upper()
    structlog.configure(
        processors=_processors(json_logs),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:  # configured again: one handler
        root.removeHandler(handler)
    root.addHandler(_Stderr())
    root.setLevel(libraries)
    for name in OWN:
        logging.getLogger(name).setLevel(level)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _PathOnly) for f in access.filters):
        access.addFilter(_PathOnly())


def _processors(json_logs: bool) -> list[Any]:
    renderer = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([structlog.processors.format_exc_info] if json_logs else []),  # plain text, no locals
        renderer,
        _redact_line,
    ]


def redact_values(*values: str | None) -> None:
    """Never print these values (keys, passwords, tokens) in any log line from now on."""
    for value in values:
        if value and len(value) >= MIN_SECRET:
            _secrets.add(value)
            _secrets.add(json.dumps(value)[1:-1])  # as it appears inside a JSON line


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: the hub's key, passwords in URLs, and channels' keys and tokens."""
    found = [settings.hub.secret_key]
    found += [urlsplit(url).password or "" for url in (settings.database.url, settings.redis.url)]

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, secret or bool(_SECRET_KEYS.search(str(key))))
        elif isinstance(node, list):
            for value in node:
                walk(value, secret)
        elif secret and isinstance(node, str) and node.strip():
            found.extend({node, node.split()[-1]})  # "Bearer abc…" is a secret, and so is "abc…"

    walk(settings.channels, False)
    return [value for value in found if value]


def redact(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


def safe_path(path: str) -> str:
    """A request path fit for the access log: no query string, no link token or case reference."""
    return _SECRET_PATHS.sub(r"\1***", path.partition("?")[0])


def _redact_line(_logger: Any, _method: str, line: str) -> str:
    return redact(line)


class _Stderr(logging.Handler):
    """Standard-library records (libraries, adapters), redacted, to whatever stderr is at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(redact(self.format(record)) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _PathOnly(logging.Filter):
    """uvicorn's access line is ``client - "METHOD PATH HTTP/v" status``: keep the path, drop the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], safe_path(args[2]), *args[3:])
        return True


#: Until ``configure`` runs, and in a process that never calls it, lines are rendered the same way: never
#: structlog's default, whose tracebacks (rich) show every local variable, passwords and addresses included.
structlog.configure(processors=_processors(json_logs=False))
log = structlog.get_logger("hub")
