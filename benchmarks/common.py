"""What every benchmark shares: settings, a throwaway database, bulk audiences, worker processes, results.

Each benchmark builds its own database (``--database``: a SQLite file in a temporary directory by default,
or a fresh schema of a PostgreSQL database, dropped after), uses Redis database 14 (flushed before and
after) and runs the hub's arq workers in separate processes started with ``spawn``, the way ``hub worker``
runs in a deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REDIS_ENV = "HUB_BENCH_REDIS"
REDIS_URL = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/14")
SAMPLE = ROOT / "data" / "offices.toml"
#: The sample office whose general topic every benchmark audience subscribes to.
TOPIC = "kota-pekalongan"
#: ``--database pg`` means this PostgreSQL database (each run makes a schema of its own in it).
PG_URL = os.environ.get("HUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One figure beside its ceiling (measured in the same run) and its aim."""

    metric: str
    value: float
    unit: str
    ceiling: float | None = None
    ceiling_what: str = ""
    #: The ceiling's unit when it differs from the figure's (jobs/s beside deliveries/s).
    ceiling_unit: str = ""
    #: ``value / ceiling`` when there is a ceiling.
    ratio: float | None = None
    aim: str = ""
    #: How far the figure is from the aim: > 1 means the aim is met (for "at most" aims: aim / value).
    vs_aim: float | None = None
    met: bool | None = None


@dataclass
class Result:
    name: str
    title: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def print_result(result: Result) -> None:
    print(f"\n== {result.title} ({result.seconds:.0f} s)")
    print("   " + ", ".join(f"{k}={v}" for k, v in result.params.items()))
    for row in result.rows:
        line = f"   {row.metric}: {fmt(row.value)} {row.unit}"
        if row.ceiling is not None:
            line += (
                f" | ceiling {fmt(row.ceiling)} {row.ceiling_unit or row.unit} ({row.ceiling_what})"
                f" | ratio {fmt(row.ratio)}"
            )
        if row.aim:
            verdict = "met" if row.met else "NOT met"
            line += f" | aim {row.aim}: {verdict} ({fmt(row.vs_aim)} of aim)"
        print(line)
    for note in result.notes:
        print(f"   - {note}")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a small smoke size (seconds, not minutes)")
    p.add_argument("--json", action="store_true", help="print the result as JSON as well")
    p.add_argument(
        "--json-out", metavar="PATH", help="write the result as JSON to PATH (used by benchmarks.all)"
    )
    p.add_argument(
        "--database",
        metavar="URL",
        default=None,
        type=database_arg,
        help="the store: 'sqlite' (a file in a temporary directory; the default), 'pg' (" + PG_URL + ") "
        "or a SQLAlchemy URL; on PostgreSQL the run makes a schema bench_<hex> and drops it after",
    )
    p.add_argument(
        "--save-result",
        action="store_true",
        help="save the result in benchmarks/results/ (replacing this benchmark's on this store) and "
        "render docs/benchmarks.md again from that folder",
    )
    p.add_argument(
        "--queue",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a [queue] setting for this run, e.g. --queue flush_every=100 (repeatable)",
    )
    return p


def database_arg(value: str) -> str:
    """``sqlite`` | ``pg`` / ``postgres`` / ``postgresql`` | a URL -> ``sqlite`` or a SQLAlchemy URL."""
    low = value.strip().lower()
    if low in ("", "sqlite"):
        return "sqlite"
    if low in ("pg", "postgres", "postgresql"):
        return PG_URL
    if value.startswith("postgresql://") or value.startswith("postgres://"):
        return "postgresql+asyncpg://" + value.split("://", 1)[1]
    if value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return value
    raise argparse.ArgumentTypeError(f"--database wants sqlite, pg or a database URL, not {value!r}")


def store_kind(database: str) -> str:
    """``sqlite`` or ``postgresql``: the variant a result belongs to."""
    return "postgresql" if database.startswith("postgres") else "sqlite"


def queue_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["flush_every=100"]`` -> ``{"flush_every": "100"}`` (pydantic converts the values)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--queue wants KEY=VALUE, not {pair!r}")
        out[key.strip()] = value.strip()
    return out


def toml_value(value: str) -> Any:
    """``"100"`` -> 100, ``"0.05"`` -> 0.05 (settings files are TOML); anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def cli(
    run: Callable[[argparse.Namespace], Result],
    build: Callable[[], argparse.ArgumentParser],
    argv: list[str] | None = None,
) -> Result:
    args = build().parse_args(argv)
    global DATABASE
    DATABASE = getattr(args, "database", None) or "sqlite"
    # a plain SIGTERM would skip the clean-up (worker processes, temp dirs, Redis db 14)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    load = os.getloadavg()[0]
    result = run(args)
    result.seconds = time.perf_counter() - started
    result.params["load_at_start"] = round(load, 2)
    if "databases" not in result.params:  # console and public measure both stores in one run
        result.params.setdefault("database", store_kind(DATABASE))
    if WARNINGS:
        result.notes.extend(f"WARNING: {w}" for w in WARNINGS)
    print_result(result)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if getattr(args, "save_result", False):
        save_result(result)
    return result


def save_result(result: Result) -> None:
    """Into benchmarks/results/<name>.<store>.json, then docs/benchmarks.md rendered from the folder."""
    from benchmarks import page

    store = store_kind(DATABASE) if "databases" not in result.params else "both"
    data = {**result.to_dict(), "machine": {**machine(), "redis_url": REDIS_URL}}
    print(f"saved {page.save(data, page.RESULTS, store, [])}; wrote {page.write()}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------------------------------------------
# Machine


def machine(redis_url: str = REDIS_URL) -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 0
    import redis as redis_sync

    try:
        client = redis_sync.Redis.from_url(redis_url)
        redis_version = str(client.info("server").get("redis_version", "?"))
        client.close()
    except redis_sync.RedisError:
        redis_version = "unreachable"
    import sqlite3

    out = {
        "nproc": str(cores),
        "cpu": model or platform.processor() or "?",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "redis": redis_version,
    }
    if store_kind(DATABASE) == "postgresql":
        with contextlib.suppress(Exception):
            out["postgresql"] = _pg_call(DATABASE, "SHOW server_version")
    return out


# ---------------------------------------------------------------------------------------------------------
# Settings, Redis, the temporary database


def overrides(db_url: str, *, channels: dict[str, Any] | None = None, **queue: Any) -> dict[str, Any]:
    """Keyword overrides for ``load_settings`` (a plain dict, so it crosses into spawned workers).

    ``db_url`` from ``database_url(tmp)``: on PostgreSQL the open workspace's schema goes with it.
    """
    schema = STORE.schema if STORE is not None and STORE.url == db_url else None
    return {
        "database": {"url": db_url, "schema": schema or ""},
        "redis": {"url": REDIS_URL, "embedded_fallback": False, "key_prefix": f"bench{uuid.uuid4().hex[:6]}"},
        "hub": {
            "public_url": "https://hub.disdukcapil.example.go.id",
            "templates_dir": str(ROOT / "templates"),
            "secret_key": "benchmark-key",
        },
        "queue": queue,
        # settings.toml enables email: merged settings keep it unless switched off explicitly
        "channels": {"email": {"enabled": False}, **(channels or {})},
        "log": {"level": "WARNING"},
    }


def make_settings(ov: dict[str, Any]) -> Any:
    from hub.settings import load_settings

    return load_settings(ROOT / "settings.toml", **ov)


def flush_redis() -> None:
    import redis as redis_sync

    client = redis_sync.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis_sync.ConnectionError:
        sys.exit(f"Redis is not running at {REDIS_URL}")
    client.flushdb()
    for key in _SENTINELS:  # a flush of our own (between phases of a run) is not interference
        client.set(key, "1")
    client.close()


@dataclass(frozen=True)
class Store:
    """The database of one workspace: its URL and, on PostgreSQL, the schema made for this run."""

    url: str
    schema: str | None = None

    @property
    def kind(self) -> str:
        return store_kind(self.url)


#: ``--database`` of this run (set by ``cli``): what ``workspace`` uses when not told otherwise.
DATABASE = "sqlite"
#: The open workspace's database (``database_url``, ``overrides`` and ``start_hub`` read it).
STORE: Store | None = None


def _pg_call(url: str, sql: str) -> Any:
    """Run one statement on PostgreSQL from sync code, inside or outside an event loop (own thread)."""
    import asyncpg

    out: list[Any] = []
    errors: list[BaseException] = []

    async def go() -> None:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            out.append(await conn.fetchval(sql))
        finally:
            await conn.close()

    def target() -> None:
        try:
            asyncio.run(go())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0] if out else None


def drop_schema(url: str, schema: str) -> None:
    _pg_call(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def database_url(tmp: Path) -> str:
    """The URL of the open workspace's database (a SQLite file in ``tmp`` or the PostgreSQL URL)."""
    if STORE is None or STORE.kind == "sqlite":
        return sqlite_url(tmp)
    return STORE.url


@contextlib.contextmanager
def store_for(tmp: Path, database: str | None = None) -> Iterator[Store]:
    """The run's database without the Redis part of ``workspace``: a SQLite file in ``tmp``, or a fresh
    PostgreSQL schema ``bench_<hex>`` dropped after. Put ``store.url`` and ``store.schema`` (as
    ``database.schema``) into the settings."""
    database = database_arg(database or DATABASE)
    if store_kind(database) == "sqlite":
        yield Store(sqlite_url(tmp))
        return
    store = Store(database, f"bench_{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        try:
            drop_schema(store.url, store.schema or "")
        except Exception as exc:  # the figures stand; say what is left behind
            WARNINGS.append(f"schema {store.schema} not dropped: {exc}")


@contextlib.contextmanager
def workspace(name: str, database: str | None = None) -> Iterator[Path]:
    """A temporary directory (for the SQLite file), the run's database; Redis db 14 flushed before and after.

    ``database`` (default: ``--database`` of this run): ``sqlite``, or a PostgreSQL URL, in which case a
    schema ``bench_<hex>`` is the run's (``database_url`` + ``overrides`` carry it into the settings, so
    ``start_hub`` and the workers use it) and is dropped after.

    A sentinel key detects another process flushing the same Redis database mid-run (another benchmark,
    a test run): the result then carries a warning instead of silently wrong figures.
    """
    import redis as redis_sync

    global STORE
    database = database_arg(database or DATABASE)
    postgres = store_kind(database) == "postgresql"
    store = Store(database, f"bench_{uuid.uuid4().hex[:12]}" if postgres else None)
    previous, STORE = STORE, store
    flush_redis()
    client = redis_sync.Redis.from_url(REDIS_URL)
    sentinel = f"bench:sentinel:{name}:{uuid.uuid4().hex}"
    client.set(sentinel, "1")
    _SENTINELS.add(sentinel)
    path = Path(tempfile.mkdtemp(prefix=f"hub-bench-{name}-"))
    try:
        yield path
    finally:
        if not client.exists(sentinel):
            WARNINGS.append(
                f"Redis {REDIS_URL} was flushed by another process during this run: figures not trustworthy"
            )
        client.close()
        _SENTINELS.discard(sentinel)
        shutil.rmtree(path, ignore_errors=True)
        STORE = previous
        if store.schema:
            try:
                drop_schema(store.url, store.schema)
            except Exception as exc:  # the figures stand; say what is left behind
                WARNINGS.append(f"schema {store.schema} not dropped: {exc}")
        flush_redis()


#: Problems noticed during a run, added to the result's notes by ``cli``.
WARNINGS: list[str] = []
#: Sentinel keys of the workspaces open in this process.
_SENTINELS: set[str] = set()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path / 'hub.db'}"


def resolve(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def quiet_logs() -> None:
    from hub.logs import configure

    configure("WARNING")


async def start_hub(ov: dict[str, Any], channels: str | None = None) -> Any:
    """Migrate a fresh database, build the hub (with the benchmark's channels) and load the sample offices."""
    from hub.context import build_hub
    from hub.regions import load, read_file
    from hub.store.db import Database

    quiet_logs()
    settings = make_settings(ov)
    db = Database(settings.database.url, schema=settings.database.schema_name or None)
    await db.migrate()
    await db.dispose()
    hub = await build_hub(settings, extra_channels=resolve(channels)() if channels else None)
    await load(hub, read_file(SAMPLE))
    # A running deployment's Redis carries the epoch marker; without it the workers' first reconcile would
    # take Redis for wiped and queue every pending delivery a second time.
    await hub.queue.mark_epoch()
    return hub


async def bulk_audience(
    hub: Any, count: int, *, channel: str, address_sql: str, topic: str = TOPIC, locale: str = "id"
) -> tuple[int, int]:
    """Insert ``count`` subscribers with one endpoint each and a confirmed subscription to ``topic``.

    Three set-based ``INSERT … SELECT`` statements over a recursive counter (no row-by-row inserts).
    ``address_sql`` is an SQL expression of the counter ``i``, e.g. ``'warga' || i || '@mail.example.com'``.
    Returns the first and last endpoint id.
    """
    from sqlalchemy import Boolean, DateTime, bindparam, func, select, text

    from hub.clock import utcnow
    from hub.store.models import Endpoint, Subscriber, Subscription, Topic

    counter = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
    if hub.db.dialect == "postgresql":  # the same rows, several times faster
        counter = "WITH n(i) AS (SELECT generate_series(1, CAST(:count AS bigint))) "
    now = utcnow()
    async with hub.db.engine.begin() as conn:
        topic_id = (await conn.execute(select(Topic.id).where(Topic.slug == topic))).scalar_one()
        sub_base = (await conn.execute(select(func.coalesce(func.max(Subscriber.id), 0)))).scalar_one()
        end_base = (await conn.execute(select(func.coalesce(func.max(Endpoint.id), 0)))).scalar_one()
        rel_base = (await conn.execute(select(func.coalesce(func.max(Subscription.id), 0)))).scalar_one()
        stamp = bindparam("now", now, type_=DateTime)
        await conn.execute(
            text(
                counter
                + "INSERT INTO subscribers (id, locale, created_at) SELECT :base + i, :locale, :now FROM n"
            ).bindparams(stamp),
            {"count": count, "base": sub_base, "locale": locale},
        )
        await conn.execute(
            text(
                counter
                + "INSERT INTO endpoints (id, subscriber_id, channel, address, kind, active, created_at) "
                f"SELECT :ebase + i, :sbase + i, :channel, {address_sql}, 'person', :active, :now FROM n"
            ).bindparams(stamp, bindparam("active", True, type_=Boolean)),
            {"count": count, "ebase": end_base, "sbase": sub_base, "channel": channel},
        )
        await conn.execute(
            text(
                counter
                + "INSERT INTO subscriptions (id, topic_id, endpoint_id, state, created_at, updated_at) "
                "SELECT :xbase + i, :topic, :ebase + i, 'confirmed', :now, :now FROM n"
            ).bindparams(stamp),
            {"count": count, "xbase": rel_base, "topic": topic_id, "ebase": end_base},
        )
        if hub.db.dialect == "postgresql":  # explicit ids leave the sequences behind
            await set_sequences(conn, ("subscribers", "endpoints", "subscriptions"))
    return end_base + 1, end_base + count


async def set_sequences(conn: Any, tables: tuple[str, ...]) -> None:
    """PostgreSQL: move each table's id sequence past rows inserted with explicit ids."""
    from sqlalchemy import text

    for table in tables:
        await conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        )


async def publish_free_text(hub: Any, title: str = "Pengumuman layanan", topic: str = TOPIC) -> int:
    """Publish a free-text announcement to ``topic``; returns the message id (fan-out runs in a worker)."""
    from hub import announcements

    text = (
        "Pelayanan tatap muka di kantor Disdukcapil ditutup sementara. Pengajuan KTP-el, KK dan akta "
        "dapat dilakukan secara daring melalui aplikasi resmi. Pengambilan dokumen tetap dilayani "
        "pukul 08.00–11.00 WIB dengan protokol kesehatan."
    )
    req = announcements.AnnouncementInput(
        template="free_text", topics=[topic], data={"title": title, "text": text}
    )
    _, message = await announcements.create(hub, req, publish=True)
    assert message is not None
    return int(message.id)


async def wait_done(
    hub: Any, message_id: int, expected: int, *, timeout: float, interval: float = 0.5, label: str = ""
) -> dict[str, Any]:
    """Poll ``delivery.status`` until the message is planned and nothing is pending; prints progress."""
    from hub import delivery

    started = time.monotonic()
    last_print = 0.0
    while True:
        status = await delivery.status(hub, message_id)
        assert status is not None
        if status["done"] and status["total"] >= expected:
            return status
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(
                f"{label or 'message'} {message_id} not done after {timeout:.0f} s: {status['totals']}"
            )
        if now - last_print >= 5:
            done = status["total"] - status["pending"]
            print(f"   … {label} {done:,}/{expected:,} done after {now - started:.0f} s", flush=True)
            last_print = now
        await asyncio.sleep(interval)


async def last_sent_at(hub: Any, message_id: int) -> datetime:
    from sqlalchemy import func, select

    from hub.store.models import Delivery

    async with hub.db.session() as session:
        value = await session.scalar(
            select(func.max(Delivery.sent_at)).where(Delivery.message_id == message_id)
        )
    assert value is not None
    return value
