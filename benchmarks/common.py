"""What every benchmark shares: settings, a throwaway database, bulk audiences, worker processes, results.

Each benchmark builds its own SQLite database in a temporary directory, uses Redis database 14 (flushed
before and after) and runs the hub's arq workers in separate processes started with ``spawn``, the way
``hub worker`` runs in a deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import shutil
import signal
import statistics
import sys
import tempfile
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
        "--queue",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a [queue] setting for this run, e.g. --queue flush_every=100 (repeatable)",
    )
    return p


def queue_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["flush_every=100"]`` -> ``{"flush_every": "100"}`` (pydantic converts the values)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--queue wants KEY=VALUE, not {pair!r}")
        out[key.strip()] = value.strip()
    return out


def cli(
    run: Callable[[argparse.Namespace], Result],
    build: Callable[[], argparse.ArgumentParser],
    argv: list[str] | None = None,
) -> Result:
    args = build().parse_args(argv)
    # a plain SIGTERM would skip the clean-up (worker processes, temp dirs, Redis db 14)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    load = os.getloadavg()[0]
    result = run(args)
    result.seconds = time.perf_counter() - started
    result.params["load_at_start"] = round(load, 2)
    if WARNINGS:
        result.notes.extend(f"WARNING: {w}" for w in WARNINGS)
    print_result(result)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


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

    return {
        "nproc": str(cores),
        "cpu": model or platform.processor() or "?",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "redis": redis_version,
    }


# ---------------------------------------------------------------------------------------------------------
# Settings, Redis, the temporary database


def overrides(db_url: str, *, channels: dict[str, Any] | None = None, **queue: Any) -> dict[str, Any]:
    """Keyword overrides for ``load_settings`` (a plain dict, so it crosses into spawned workers)."""
    return {
        "database": {"url": db_url},
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


@contextlib.contextmanager
def workspace(name: str) -> Iterator[Path]:
    """A temporary directory for the SQLite file; Redis db 14 flushed before and after.

    A sentinel key detects another process flushing the same Redis database mid-run (another benchmark,
    a test run): the result then carries a warning instead of silently wrong figures.
    """
    import redis as redis_sync

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
    db = Database(settings.database.url)
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
    return end_base + 1, end_base + count


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


# ---------------------------------------------------------------------------------------------------------
# Hub worker processes


def _hub_process(
    ov: dict[str, Any],
    channels: str | None,
    lanes: tuple[str, ...],
    cron: bool,
    stop: Any,
    ready: Any,
    profile_path: str | None,
    breakdown_path: str | None,
) -> None:
    quiet_logs()
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    timings = _instrument() if breakdown_path else None
    try:
        asyncio.run(_serve(ov, channels, lanes, cron, stop, ready))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
        if timings is not None and breakdown_path:
            Path(breakdown_path).write_text(json.dumps(timings))


async def _serve(
    ov: dict[str, Any], channels: str | None, lanes: tuple[str, ...], cron: bool, stop: Any, ready: Any
) -> None:
    from hub.context import build_hub
    from hub.delivery import build_workers

    hub = await build_hub(make_settings(ov), extra_channels=resolve(channels)() if channels else None)
    workers = build_workers(hub, cron=cron, lanes=lanes)
    tasks = [asyncio.create_task(w.main()) for w in workers]
    ready.put(os.getpid())
    try:
        while not stop.is_set():
            await asyncio.sleep(0.05)
            for task in tasks:
                if task.done():
                    task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.close()


def _instrument() -> dict[str, list[float]]:
    """Wrap the hub's steps with wall-clock timers (benchmark-only monkeypatching, in the worker process).

    Wall time of awaited calls: concurrent jobs overlap, so the sums can exceed the elapsed time; the
    shares still say where jobs wait.
    """
    import functools

    from hub.delivery import jobs, sender
    from hub.queue import Queue

    timings: dict[str, list[float]] = {}

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        slot = timings.setdefault(label, [0.0, 0.0])

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                slot[0] += time.perf_counter() - t0
                slot[1] += 1

        setattr(owner, name, timed)

    # The modules call these by their own names, so that is where they are wrapped.
    wrap(jobs, "send_batch", "send_batch (whole job)")
    wrap(jobs, "claim", "delivery.claim")
    wrap(sender, "record", "delivery.record")
    wrap(sender, "renew_lease", "delivery.renew_lease")
    wrap(jobs, "plan_chunk", "delivery.plan_chunk")
    wrap(Queue, "send_many", "Queue.send_many")
    return timings


class HubWorkers:
    """``count`` processes, each running the hub's arq workers (both lanes) as ``hub worker`` does."""

    def __init__(
        self,
        ov: dict[str, Any],
        *,
        channels: str | None = None,
        count: int = 1,
        lanes: tuple[str, ...] = ("urgent", "bulk"),
        cron: bool = True,
        profile_dir: Path | None = None,
        breakdown_dir: Path | None = None,
    ) -> None:
        self.ov, self.channels, self.count, self.lanes, self.cron = ov, channels, count, lanes, cron
        self.profile_dir, self.breakdown_dir = profile_dir, breakdown_dir
        self.ctx = mp.get_context("spawn")
        self.stop_event = self.ctx.Event()
        self.procs: list[Any] = []

    def profile_files(self) -> list[Path]:
        return sorted(self.profile_dir.glob("worker-*.prof")) if self.profile_dir else []

    def breakdown(self) -> dict[str, list[float]]:
        total: dict[str, list[float]] = {}
        for path in sorted(self.breakdown_dir.glob("worker-*.json")) if self.breakdown_dir else []:
            for label, (secs, calls) in json.loads(path.read_text()).items():
                slot = total.setdefault(label, [0.0, 0.0])
                slot[0] += secs
                slot[1] += calls
        return total

    def __enter__(self) -> HubWorkers:
        ready = self.ctx.Queue()
        for i in range(self.count):
            profile = str(self.profile_dir / f"worker-{i}.prof") if self.profile_dir else None
            breakdown = str(self.breakdown_dir / f"worker-{i}.json") if self.breakdown_dir else None
            proc = self.ctx.Process(
                target=_hub_process,
                args=(
                    self.ov,
                    self.channels,
                    self.lanes,
                    self.cron,
                    self.stop_event,
                    ready,
                    profile,
                    breakdown,
                ),
                name=f"hub-worker-{i}",
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
        deadline = time.monotonic() + 60
        started = 0
        while started < self.count:
            try:
                ready.get(timeout=0.5)
                started += 1
            except queue_mod.Empty:
                if any(not p.is_alive() for p in self.procs) or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("a hub worker process failed to start") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for proc in self.procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.procs.clear()

    def check(self) -> None:
        dead = [p.name for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"hub worker process died: {', '.join(dead)}")


def profile_summary(files: list[Path], limit: int = 25) -> str:
    """The top functions by own time (tottime) across the worker profiles."""
    import io
    import pstats

    if not files:
        return ""
    out = io.StringIO()
    stats = pstats.Stats(*[str(f) for f in files], stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()
