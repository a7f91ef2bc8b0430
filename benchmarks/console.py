"""Console: page latency with 1,000,000 subscribers and 10,000 announcements, SQLite and PostgreSQL.

The hub's app (``create_app``, the API side of ``hub run``) serves in a subprocess under uvicorn on
127.0.0.1; an httpx client signed in as an admin (TOTP) of Banten's provincial office (three offices in its
subtree) asks each page 200 times in a row after a warm-up: the dashboard, one phase, a deep page of it, an
announcement's detail (the newest, 370k delivery rows held; an old one, counts only), the composer, its
preview with recipient counts for an office topic and for a whole province, the subscribers page (when it
is mounted) and the audit log. The audience counts the pages read (``hub.audience``) are counted once
before serving, as the worker's reconciler does, and that count is timed. Ceiling: ``GET /healthz`` of
the same server (a database and a Redis ping) in the same run. Aim: p95 under 200 ms.

    python -m benchmarks.console [--subscribers 1000000] [--announcements 10000]
                                 [--databases sqlite,postgresql] [--budget 120] [--rebuild]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REDIS_URL,
    ROOT,
    Result,
    Row,
    cli,
    overrides,
    parser,
    percentile,
    quiet_logs,
    store_kind,
)
from benchmarks.workers import ServedProcess

AIM_MS = 200.0
PG_URL = os.environ.get("HUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CACHE = ROOT / ".cache" / "bench"
ADMIN = ("admin@banten.example.go.id", "benchmark-password-1", "banten-provinsi")
#: Channels enabled in the served hub (Matrix endpoints exist but are counted nowhere).
CHANNELS = {
    "email": {"enabled": True},
    "telegram": {"enabled": True, "token": "123456:benchmark", "username": "bench_bot"},
    "sms": {
        "enabled": True,
        "dlr_secret": "benchmark-dlr",
        "gateways": [
            {
                "driver": "kannel",
                "name": "kannel",
                "url": "http://127.0.0.1:13013/cgi-bin/sendsms",
                "username": "hub",
                "password": "benchmark",
            }
        ],
    },
}


def settings_overrides(url: str, schema: str | None) -> dict[str, Any]:
    ov = overrides(url, channels=CHANNELS)
    ov["database"]["schema"] = schema or ""
    return ov


# ---------------------------------------------------------------------------------------------------------
# The database


async def _build(url: str, schema: str | None, subscribers: int, anns: int) -> dict[str, Any]:
    from benchmarks import console_data
    from benchmarks.common import SAMPLE, make_settings
    from hub.context import build_hub
    from hub.regions import load, read_file
    from hub.store.db import Database

    quiet_logs()
    db = Database(url, schema=schema)
    await db.migrate()
    await db.dispose()
    hub = await build_hub(make_settings(settings_overrides(url, schema)))
    try:
        await load(hub, read_file(SAMPLE))
        t0 = time.perf_counter()
        people = await console_data.load_people(hub, subscribers)
        t1 = time.perf_counter()
        info = await console_data.load_announcements(hub, anns, people["general"])
        t2 = time.perf_counter()
        from sqlalchemy import text

        async with hub.db.engine.begin() as conn:
            if hub.db.dialect == "postgresql":
                for table in ("subscribers", "endpoints", "subscriptions", "announcements", "messages"):
                    await conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        await console_data.analyze(hub)
        info["load_people_s"] = round(t1 - t0, 1)
        info["load_announcements_s"] = round(t2 - t1, 1)
        info["analyze_s"] = round(time.perf_counter() - t2, 1)
    finally:
        await hub.close()
    return info


def sqlite_database(args: argparse.Namespace, tmp: Path) -> tuple[str, dict[str, Any]]:
    """The cached SQLite file (built once per schema and size) copied into ``tmp``: runs never change it."""
    from benchmarks.console_data import schema_key

    cached = CACHE / f"console-{args.subscribers}-{args.announcements}-{schema_key()}.db"
    meta = cached.with_suffix(".json")
    if not cached.exists() or not meta.exists() or args.rebuild:
        CACHE.mkdir(parents=True, exist_ok=True)
        building = cached.with_suffix(".building")
        for stale in CACHE.glob(building.name + "*"):
            stale.unlink()
        started = time.perf_counter()
        info = asyncio.run(
            _build(f"sqlite+aiosqlite:///{building}", None, args.subscribers, args.announcements)
        )
        info["built_s"] = round(time.perf_counter() - started, 1)
        building.rename(cached)
        meta.write_text(json.dumps(info))
    info = json.loads(meta.read_text())
    info["cached"] = str(cached.relative_to(ROOT))
    shutil.copyfile(cached, tmp / "hub.db")
    return f"sqlite+aiosqlite:///{tmp / 'hub.db'}", info


def postgres_database(args: argparse.Namespace, schema: str) -> dict[str, Any]:
    started = time.perf_counter()
    info = asyncio.run(_build(args.postgres, schema, args.subscribers, args.announcements))
    info["built_s"] = round(time.perf_counter() - started, 1)
    return info


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------------------
# The server (a subprocess: ``python -m benchmarks.console --serve JSON``)


def serve(spec: dict[str, Any]) -> None:
    """The hub's app under uvicorn, plus one benchmark-only route: ``GET /bench/select`` (``SELECT 1``)."""
    import uvicorn
    from sqlalchemy import text

    from benchmarks.common import make_settings
    from hub.api.app import create_app
    from hub.context import build_hub

    async def main() -> None:
        quiet_logs()
        hub = await build_hub(make_settings(spec["overrides"]))
        hub.role = "api"
        if spec.get("jit_off") and hub.db.dialect == "postgresql":  # a comparison run, not the hub's default
            from sqlalchemy import event

            @event.listens_for(hub.db.engine.sync_engine, "connect")
            def _no_jit(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("SET jit = off")
                cursor.close()

        app = create_app(hub)

        @app.get("/bench/select", include_in_schema=False)
        async def bare_select() -> dict[str, int]:
            async with hub.db.session() as session:
                return {"one": int(await session.scalar(text("SELECT 1")) or 0)}

        config = uvicorn.Config(app, host="127.0.0.1", port=spec["port"], log_level="warning", lifespan="on")
        try:
            await uvicorn.Server(config).serve()
        finally:
            await hub.close()

    asyncio.run(main())


def server_process(ov: dict[str, Any], *, jit_off: bool = False) -> ServedProcess:
    """The hub's console and API in a process of their own (``--serve``), with a benchmark-only route."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = {"overrides": ov, "port": port, "jit_off": jit_off}
    cmd = [sys.executable, "-m", "benchmarks.console", "--serve", json.dumps(spec)]
    return ServedProcess(cmd, port, what="the hub's server")


# ---------------------------------------------------------------------------------------------------------
# Measuring


def pages(info: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(name, method, path, form) of every measured request; the form's CSRF token is added per session."""
    text = {"template": "free_text", "title_id": "Layanan tutup", "text_id": "Kantor tutup sementara.",
            "action": "preview"}  # fmt: skip
    return [
        ("ceiling: GET /healthz", "GET", "/healthz", None),
        ("bare SELECT 1 route", "GET", "/bench/select", None),
        ("dashboard", "GET", "/console/", None),
        ("dashboard, phase done", "GET", "/console/?fase=done", None),
        ("dashboard, phase done page 100", "GET", "/console/?fase=done&halaman=100", None),
        ("announcement detail (newest, rows held)", "GET", f"/console/pengumuman/{info['big']}", None),
        ("announcement detail (old, counts kept)", "GET", f"/console/pengumuman/{info['old']}", None),
        ("composer", "GET", "/console/pengumuman/baru?jenis=free_text", None),
        (
            "preview, office topic kota-serang",
            "POST",
            "/console/pengumuman/baru",
            {**text, "topics": "kota-serang"},
        ),
        ("preview, province 36 (Banten)", "POST", "/console/pengumuman/baru", {**text, "regions": "36"}),
        ("subscribers", "GET", "/console/pelanggan", None),
        ("audit log", "GET", "/console/audit", None),
    ]


async def _measure(
    ov: dict[str, Any], port: int, info: dict[str, Any], requests: int, budget: float
) -> dict[str, dict[str, Any]]:
    import httpx

    from benchmarks.common import make_settings
    from hub.console.auth import Role
    from hub.context import build_hub
    from tests.console import csrf_of, make_staff, sign_in

    hub = await build_hub(make_settings(ov))
    try:
        _, secret = await make_staff(hub, ADMIN[0], Role.ADMIN, ADMIN[2], ADMIN[1])
    finally:
        await hub.close()
    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        signed = await sign_in(client, ADMIN[0], ADMIN[1], secret)
        assert signed.status_code == 303, f"sign-in answered {signed.status_code}"
        csrf = csrf_of((await client.get("/console/pengumuman/baru?jenis=free_text")).text)
        for name, method, path, form in pages(info):
            data = {**form, "csrf": csrf} if form else None
            first = await client.request(method, path, data=data)
            if first.status_code != 200 and path.startswith("/console/"):  # a page still being written
                out[name] = {"skipped": f"not measured: {method} {path} answered {first.status_code}"}
                print(f"   {name}: {out[name]['skipped']}", flush=True)
                continue
            assert first.status_code == 200, f"{method} {path} answered {first.status_code}"
            for _ in range(4):
                await client.request(method, path, data=data)
            times: list[float] = []
            started = time.perf_counter()
            while len(times) < requests and time.perf_counter() - started < budget:
                t0 = time.perf_counter()
                response = await client.request(method, path, data=data)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, f"{method} {path} answered {response.status_code}"
            out[name] = {
                "n": len(times),
                "p50": percentile(times, 50),
                "p95": percentile(times, 95),
                "p99": percentile(times, 99),
                "bytes": len(first.content),
            }
            print(f"   {name}: p50 {out[name]['p50']:.1f} · p95 {out[name]['p95']:.1f} · "
                  f"p99 {out[name]['p99']:.1f} ms (n={len(times)})", flush=True)  # fmt: skip
    return out


async def _count_audience(ov: dict[str, Any]) -> float:
    """Seconds of the reconciler's audience count (``hub.audience.refresh``), run once before serving, as a
    worker would have: the pages then read its rows."""
    from benchmarks.common import make_settings
    from hub import audience
    from hub.context import build_hub

    hub = await build_hub(make_settings(ov))
    try:
        started = time.perf_counter()
        await audience.refresh(hub)
        return round(time.perf_counter() - started, 1)
    finally:
        await hub.close()


def one_database(args: argparse.Namespace, which: str) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-console-"))
    schema = f"bench_console_{uuid.uuid4().hex[:8]}" if which == "postgresql" else None
    try:
        if which == "sqlite":
            url, info = sqlite_database(args, tmp)
        else:
            url, info = args.postgres, postgres_database(args, schema or "")
        ov = settings_overrides(url, schema)
        ov["redis"]["url"] = REDIS_URL
        info["audience_count_s"] = asyncio.run(_count_audience(ov))
        print(f"   {which}: loaded ({info}); serving …", flush=True)
        with server_process(ov, jit_off=args.pg_jit_off) as server:
            figures = asyncio.run(_measure(ov, server.port, info, args.requests, args.budget))
        return info, figures
    finally:
        if schema:
            asyncio.run(_drop_schema(args.postgres, schema))
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.subscribers, args.announcements, args.requests = 20_000, 1_000, 20
    which = [w.strip() for w in args.databases.split(",") if w.strip()]
    if args.database:  # --database picks one store (benchmarks.all runs each store as its own variant)
        which = [store_kind(args.database)]
        if which == ["postgresql"]:
            args.postgres = args.database
    result = Result(
        name="console",
        title=f"Console: pages with {args.subscribers:,} subscribers, {args.announcements:,} announcements",
        params={
            "subscribers": args.subscribers,
            "announcements": args.announcements,
            "requests": args.requests,
            "databases": ",".join(which),
            **({"pg_jit": "off"} if args.pg_jit_off else {}),
        },
    )
    for db in which:
        print(f"   {db} …", flush=True)
        info, figures = one_database(args, db)
        ceiling = figures["ceiling: GET /healthz"]
        for name, fig in figures.items():
            if "skipped" in fig:
                result.notes.append(f"{db}: {name}: {fig['skipped']}")
                continue
            result.notes.append(
                f"{db}: {name}: p50 {fig['p50']:.1f} ms, p95 {fig['p95']:.1f} ms, p99 {fig['p99']:.1f} ms "
                f"({fig['n']} requests, {fig['bytes']:,} bytes)"
            )
            if name.startswith("ceiling") or name.startswith("bare"):
                continue
            result.rows.append(
                Row(
                    metric=f"{db}: {name}, p95",
                    value=fig["p95"],
                    unit="ms",
                    ceiling=ceiling["p95"],
                    ceiling_what="GET /healthz p95, same server",
                    ratio=fig["p95"] / ceiling["p95"],
                    aim=f"< {AIM_MS:g} ms",
                    vs_aim=AIM_MS / fig["p95"],
                    met=fig["p95"] < AIM_MS,
                )
            )
        result.notes.append(
            f"{db}: data: {info['states']} announcements, {info['messages']:,} messages, "
            f"{info['held_rows']:,} delivery rows held for the newest {info['held_messages']} messages "
            f"(the newest of Kota Serang to its whole audience), {info['kept_rows']:,} kept count rows, "
            f"{info['audit_rows']:,} audit entries; built in {info['built_s']} s "
            f"(people {info['load_people_s']} s, announcements {info['load_announcements_s']} s)"
            + (f", cached as {info['cached']}" if info.get("cached") else "")
        )
        result.notes.append(
            f"{db}: the reconciler's audience count (`hub.audience.refresh`: every topic, office and region "
            f"per channel and language, rows replaced in one transaction) took {info['audience_count_s']} s, "
            "once before serving, as a worker does at most every `console.count_refresh_seconds` when "
            "subscriptions changed; the composer, preview and subscribers pages read its rows"
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=1_000_000)
    p.add_argument("--announcements", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=200, help="measured requests per page (after 5 warm-up)")
    p.add_argument(
        "--budget", type=float, default=120.0, help="seconds per page at most (fewer requests then)"
    )
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (a schema of its own, dropped after)")
    p.add_argument(
        "--pg-jit-off",
        action="store_true",
        help="PostgreSQL: SET jit = off on the server's connections (a comparison, not the hub's default)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached SQLite database")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> Result | None:
    args = build_parser().parse_args(argv)
    if args.serve:
        serve(json.loads(args.serve))
        return None
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
