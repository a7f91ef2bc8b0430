"""Public pages: office pages and feeds served by `hub run` with 1,000 offices and 100,000 announcements.

A real `hub run` (API, console, public pages and the in-process worker, as a small office runs it) serves
a database with 1,000 offices in 40 provinces and 100 announcements each (``benchmarks/public_data.py``).
wrk (Debian's package, ``scripts/install-wrk.sh``; installed here when missing) loads it over keep-alive
connections, one thread, each request for a random office through a Lua script: ``/kantor/{office}``,
``/kantor/{office}/feed.atom``, and the office page again with the ``If-None-Match`` a browser sends
back (its ETag, read once per office beforehand), which the hub answers 304. Before the runs every
office's page and feed is fetched once (cold: rendered from the database); that latency is in the notes.
Ceiling, same run, same wrk settings: a bare Starlette app under uvicorn returning the same bytes (one
office's page and feed, its ETag, 304 on a match). Aim: at least 1,000 requests/s.

    python -m benchmarks.public [--offices 1000] [--per-office 100] [--databases sqlite,postgresql]
                                [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
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
from hub.settings import PublicSection

AIM = 1000.0
PG_URL = os.environ.get("HUB_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
#: Enabled while the data is built (``announcements.create`` wants a channel); the served hub has none.
BUILD_CHANNELS = {
    "email": {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 2525,
        "start_tls": False,
        "sender": "Disdukcapil <no-reply@disdukcapil.example.go.id>",
    }
}
KINDS = (
    ("page", "", False, "GET /kantor/{office}"),
    ("feed", "/feed.atom", False, "GET /kantor/{office}/feed.atom"),
    ("304", "", True, "GET /kantor/{office} with If-None-Match (304)"),
)


# ---------------------------------------------------------------------------------------------------------
# Data


async def _build(
    url: str, schema: str | None, offices: int, per_office: int, workdir: Path
) -> dict[str, Any]:
    from benchmarks.common import SAMPLE, make_settings
    from benchmarks.public_data import load_announcements, load_offices
    from hub.context import build_hub
    from hub.regions import load, read_file
    from hub.store.db import Database

    quiet_logs()
    ov = overrides(url, channels=BUILD_CHANNELS)
    ov["database"]["schema"] = schema or ""
    settings = make_settings(ov)
    db = Database(settings.database.url, schema=schema or None)
    await db.migrate()
    await db.dispose()
    hub = await build_hub(settings)
    try:
        await load(hub, read_file(SAMPLE))
        started = time.perf_counter()
        ids = await load_offices(hub, workdir, offices)
        loaded = time.perf_counter()
        counts = await load_announcements(hub, ids, per_office)
        done = time.perf_counter()
        if hub.db.dialect == "postgresql":
            from sqlalchemy import text

            async with hub.db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE"))
    finally:
        await hub.close()
    return {
        "offices": ids,
        **counts,
        "offices_s": round(loaded - started, 1),
        "announcements_s": round(done - loaded, 1),
    }


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _settings_file(path: Path, url: str, schema: str | None, port: int, cache_seconds: float | None) -> Path:
    path.write_text(
        "\n".join(
            [
                "[hub]",
                'public_url = "https://hub.disdukcapil.example.go.id"',
                f'templates_dir = "{ROOT / "templates"}"',
                'secret_key = "benchmark-key"',
                "[database]",
                f'url = "{url}"',
                f'schema = "{schema or ""}"',
                "[redis]",
                f'url = "{REDIS_URL}"',
                "embedded_fallback = false",
                f'key_prefix = "benchpub{uuid.uuid4().hex[:6]}"',
                "[api]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "[log]",
                'level = "WARNING"',
                "[channels.email]",
                "enabled = false",
                *(["[public]", f"cache_seconds = {cache_seconds}"] if cache_seconds is not None else []),
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------------------------------------
# Servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server subprocess in a session of its own, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, cmd: list[str], port: int, ready_path: str, log: Path) -> None:
        self.cmd, self.port, self.ready_path, self.log = cmd, port, ready_path, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Process:
        import httpx

        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"{self.cmd[2:]} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.base + self.ready_path, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.cmd[2:]} did not answer 200 on {self.ready_path}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def serve_bare(spec: dict[str, Any]) -> None:
    """The ceiling: the same bytes and headers from a bare Starlette app (``--serve-bare JSON``)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    docs = {}
    for name in ("page", "feed"):
        doc = spec[name]
        docs[name] = (Path(doc["body"]).read_bytes(), doc["headers"])

    def answer(name: str, request: Request) -> Response:
        body, headers = docs[name]
        if request.headers.get("if-none-match") == headers["etag"]:
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers)

    async def page(request: Request) -> Response:
        return answer("page", request)

    async def feed(request: Request) -> Response:
        return answer("feed", request)

    app = Starlette(routes=[Route("/kantor/{office}", page), Route("/kantor/{office}/feed.atom", feed)])
    uvicorn.run(app, host="127.0.0.1", port=spec["port"], log_level="warning")


# ---------------------------------------------------------------------------------------------------------
# Load


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "install-wrk.sh")], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed (scripts/install-wrk.sh)")
    return found


def _lua(offices: list[str], suffix: str, etags: dict[str, str] | None) -> str:
    names = ", ".join(json.dumps(o) for o in offices)
    tags = ", ".join(f"[{json.dumps(o)}] = {json.dumps(etags[o])}" for o in offices) if etags else ""
    return f"""
local offices = {{ {names} }}
local etags = {{ {tags} }}
local with_tag = {"true" if etags else "false"}
local suffix = {json.dumps(suffix)}
setup = function(thread) math.randomseed(os.time()) end
request = function()
  local office = offices[math.random(#offices)]
  local headers = {{}}
  if with_tag then headers["If-None-Match"] = etags[office] end
  return wrk.format("GET", "/kantor/" .. office .. suffix, headers)
end
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(wrk: str, base: str, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", str(script), base]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=args.duration + 60).stdout
    figures: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        figures[f"p{q}"] = _ms(re.search(rf"\s{q}(?:\.000)?%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    figures["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    figures["bad"] = int(bad.group(1)) if bad else 0
    figures["socket_errors"] = errors.group(1).strip() if errors else ""
    return figures


def warm(base: str, offices: list[str]) -> dict[str, Any]:
    """Every office's page and feed once (cold, rendered from the database): ETags, sizes, latencies."""
    import httpx

    etags: dict[str, str] = {}
    cold: dict[str, list[float]] = {"page": [], "feed": []}
    sizes: dict[str, list[int]] = {"page": [], "feed": []}
    with httpx.Client(base_url=base, timeout=30) as client:
        for office in offices:
            for name, suffix in (("page", ""), ("feed", "/feed.atom")):
                started = time.perf_counter()
                resp = client.get(f"/kantor/{office}{suffix}")
                cold[name].append((time.perf_counter() - started) * 1000)
                if resp.status_code != 200:
                    raise SystemExit(f"/kantor/{office}{suffix} answered {resp.status_code}")
                sizes[name].append(len(resp.content))
                if name == "page":
                    etags[office] = resp.headers["etag"]
        sample = random.Random(3).sample(offices, min(20, len(offices)))
        for office in sample:  # what the 304 run relies on: the ETag read before still matches
            resp = client.get(f"/kantor/{office}", headers={"If-None-Match": etags[office]})
            if resp.status_code != 304:
                raise SystemExit(f"/kantor/{office} with its ETag answered {resp.status_code}, not 304")
    return {"etags": etags, "cold": cold, "sizes": sizes}


def _documents(base: str, office: str, tmp: Path) -> dict[str, Any]:
    """One office's page and feed as the hub serves them: the bare server's bytes and headers."""
    import httpx

    spec: dict[str, Any] = {}
    keep = ("content-type", "etag", "cache-control")
    for name, suffix in (("page", ""), ("feed", "/feed.atom")):
        resp = httpx.get(f"{base}/kantor/{office}{suffix}", timeout=30)
        body = tmp / f"{name}.bin"
        body.write_bytes(resp.content)
        spec[name] = {"body": str(body), "headers": {k: resp.headers[k] for k in keep if k in resp.headers}}
    return spec


# ---------------------------------------------------------------------------------------------------------
# One database


def one_database(args: argparse.Namespace, which: str, wrk: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-public-"))
    schema = f"bench_public_{uuid.uuid4().hex[:8]}" if which == "postgresql" else None
    url = args.postgres if schema else f"sqlite+aiosqlite:///{tmp / 'hub.db'}"
    try:
        started = time.perf_counter()
        info = asyncio.run(_build(url, schema, args.offices, args.per_office, tmp))
        info["built_s"] = round(time.perf_counter() - started, 1)
        offices = info.pop("offices")
        port = _free_port()
        settings = _settings_file(tmp / "settings.toml", url, schema, port, args.cache_seconds)
        hub_cmd = [sys.executable, "-m", "hub.cli", "--settings", str(settings), "run", "--port", str(port)]
        print(f"   {which}: built in {info['built_s']} s; `hub run` …", flush=True)
        figures: dict[str, Any] = {"info": info}
        with Process(hub_cmd, port, f"/kantor/{offices[0]}", tmp / "hub-run.log") as hub:
            warmed = warm(hub.base, offices)
            figures["warm"] = {k: v for k, v in warmed.items() if k != "etags"}
            spec = _documents(hub.base, offices[0], tmp)
            for name, suffix, tagged, _ in KINDS:
                script = tmp / f"{name}.lua"
                script.write_text(_lua(offices, suffix, warmed["etags"] if tagged else None))
                figures[name] = run_wrk(wrk, hub.base, script, args)
                print(f"   {which}: hub {name}: {figures[name]}", flush=True)
            hot = tmp / "hot.lua"
            hot.write_text(_lua(offices[:1], "", None))
            figures["hot"] = run_wrk(wrk, hub.base, hot, args)
        bare_port = _free_port()
        spec["port"] = bare_port
        bare_cmd = [sys.executable, "-m", "benchmarks.public", "--serve-bare", json.dumps(spec)]
        with Process(bare_cmd, bare_port, f"/kantor/{offices[0]}", tmp / "bare.log") as bare:
            etag = spec["page"]["headers"]["etag"]
            for name, suffix, tagged, _ in KINDS:
                script = tmp / f"bare-{name}.lua"
                script.write_text(_lua(offices, suffix, dict.fromkeys(offices, etag) if tagged else None))
                figures[f"bare {name}"] = run_wrk(wrk, bare.base, script, args)
                print(f"   {which}: bare {name}: {figures[f'bare {name}']}", flush=True)
        return figures
    finally:
        if schema:
            asyncio.run(_drop_schema(args.postgres, schema))
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.offices, args.per_office, args.duration = 50, 20, 3
    wrk = ensure_wrk()
    which = [w.strip() for w in args.databases.split(",") if w.strip()]
    if args.database:  # --database picks one store (benchmarks.all runs each store as its own variant)
        which = [store_kind(args.database)]
        if which == ["postgresql"]:
            args.postgres = args.database
    result = Result(
        name="public",
        title=f"Public pages: `hub run` with {args.offices:,} offices, "
        f"{args.offices * args.per_office:,} announcements",
        params={
            "offices": args.offices,
            "announcements": args.offices * args.per_office,
            "databases": ",".join(which),
            "wrk": f"1 thread, {args.connections} keep-alive connections, {args.duration} s per run",
            **({"cache_seconds": args.cache_seconds} if args.cache_seconds is not None else {}),
        },
    )
    for db in which:
        figures = one_database(args, db, wrk)
        info, warmed = figures["info"], figures["warm"]
        for name, _, _, what in KINDS:
            fig, ceil = figures[name], figures[f"bare {name}"]
            result.rows.append(
                Row(
                    metric=f"{db}: {what}, random of {args.offices:,}",
                    value=fig["rps"],
                    unit="req/s",
                    ceiling=ceil["rps"],
                    ceiling_what="bare Starlette/uvicorn, same bytes, same wrk",
                    ratio=fig["rps"] / ceil["rps"],
                    aim=f"≥ {AIM:,.0f} req/s",
                    vs_aim=fig["rps"] / AIM,
                    met=fig["rps"] >= AIM,
                )
            )
            result.notes.append(
                f"{db}: {what}: {fig['rps']:,.0f} req/s, p50 {fig['p50']:.1f} ms, p99 {fig['p99']:.1f} ms "
                f"({fig['requests']:,} requests, {fig['bad']} not 2xx/3xx"
                + (f", socket errors {fig['socket_errors']}" if fig["socket_errors"] else "")
                + f"); bare: {ceil['rps']:,.0f} req/s, p50 {ceil['p50']:.1f} ms, p99 {ceil['p99']:.1f} ms"
            )
        hot = figures["hot"]
        result.notes.append(
            f"{db}: one office only (every request a cache hit): {hot['rps']:,.0f} req/s, "
            f"p50 {hot['p50']:.1f} ms, p99 {hot['p99']:.1f} ms"
        )
        for name in ("page", "feed"):
            cold, sizes = warmed["cold"][name], warmed["sizes"][name]
            result.notes.append(
                f"{db}: cold {name} (first request per office, rendered from the database, one at a time): "
                f"p50 {percentile(cold, 50):.1f} ms, p99 {percentile(cold, 99):.1f} ms; "
                f"{min(sizes):,}–{max(sizes):,} bytes"
            )
        result.notes.append(
            f"{db}: data: {args.offices:,} offices in 40 provinces (and the 5 sample ones), "
            f"{info['announcements']:,} announcements with their messages "
            f"({info['in_force']:,} in force now); "
            f"built in {info['built_s']} s (offices through the region loader {info['offices_s']} s, "
            f"announcements {info['announcements_s']} s)"
        )
    seconds = args.cache_seconds if args.cache_seconds is not None else PublicSection().cache_seconds
    result.notes.append(
        f"Random offices: each office's page and feed stays rendered for `public.cache_seconds` "
        f"({seconds:g} s), until its status changes or anything is published (hub.freshness); before the "
        "runs every office was fetched once, so the runs measure serving; the cold lines measure rendering"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--offices", type=int, default=1000)
    p.add_argument("--per-office", type=int, default=100, help="announcements per office")
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (a schema of its own, dropped after)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    p.add_argument(
        "--cache-seconds",
        type=float,
        help="public.cache_seconds of the served hub (default: the hub's own); a short one makes the random "
        "runs measure rendering instead of serving",
    )
    p.add_argument("--serve-bare", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> Result | None:
    args = build_parser().parse_args(argv)
    if args.serve_bare:
        serve_bare(json.loads(args.serve_bare))
        return None
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
