"""Structured logs (structlog): key=value on a terminal, JSON lines when ``log.json`` is set."""

from __future__ import annotations

import logging

import structlog


def configure(level: str = "INFO", json_logs: bool = False) -> None:
    renderer = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), format="%(message)s")
    for noisy in ("arq", "httpx", "aiosqlite", "sqlalchemy.engine", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


log = structlog.get_logger("hub")
