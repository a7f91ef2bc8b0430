"""Several worker hosts on one machine: `hub worker` processes in network namespaces, over links with latency.

Each "host" is a network namespace (``ip netns add hubhN``) joined to the root namespace by a veth pair
(root side ``10.231.N.1/30``, host side ``10.231.N.2/30``). PostgreSQL and Redis stay in the root
namespace: the shared ones listen on 127.0.0.1 only and are neither reconfigured nor restarted, so the
run starts

- a private ``redis-server`` (no persistence) on 127.0.0.1 at a free port, the run's own Redis;
- a TCP forwarder process in the root namespace listening on every root-side veth address, port 5432 to
  the PostgreSQL on 127.0.0.1:5432 and port 6379 to the private Redis (no iptables/nft DNAT needed; the
  forwarder's CPU is measured and reported on its own, never added to the workers').

Latency: ``tc qdisc add dev <veth> root netem delay D`` on both ends of every link (so each round trip
between a worker and the database or Redis takes 2·D more), https://man7.org/linux/man-pages/man8/tc-netem.8.html.
A kernel without ``sch_netem`` (this machine's has none) refuses that qdisc; the forwarder then holds every
chunk D in each direction instead, which adds the same 2·D to each round trip, and the result says which
one was used.

For each worker count (``--workers 1,2,4,8``) the processes are spread round-robin over the hosts and each
runs the real CLI, ``ip netns exec hubhN python -m benchmarks.hosts _worker --settings F worker`` (``hub
worker`` with a ``null`` channel that says ``Sent()`` at once and keeps the delivery ids it was handed).
One announcement to ``--count`` subscribers is published from the root namespace and drained untimed (the
workers open their connections; ``--no-warm-up`` skips it), then a second one, timed:

- CPU-seconds per 1,000 deliveries: user + system time of the worker processes (all threads) from publish
  until every delivery is ``sent``, over the deliveries; aim: within 20% of the one-worker figure;
- duplicates: copies per delivery id handed to the null channel, summed over all workers (and the
  database's count of ``sent`` rows); aim: zero.

Needs root (namespaces, veth, tc) and PostgreSQL (``--database pg``, the default here: SQLite is a file and
has no meaning across hosts). Namespaces, links, the forwarder and the private Redis are removed in a
``finally``; ``--cleanup`` removes what a killed run left.

    sudo .venv/bin/python -m benchmarks.hosts [--workers 1,2,4,8] [--hosts 4] [--delay-ms 1] \
        [--count 40000] [--database pg] [--save-result] [--profile DIR]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import hosts_probe as probe
from benchmarks.hosts_net import (
    PG_PORT,
    PREFIX,
    REDIS_PORT,
    ROOT,
    Proc,
    cleanup,
    cpu_seconds,
    forward_entry,
    make_hosts,
    private_redis,
    root_address,
    run_ip,
    write_settings,
)

AIM_SPREAD = 0.20


# ---------------------------------------------------------------------------------------------------------
# The worker side: `hub worker` with a counting null channel (runs inside a namespace)


def _null_channel() -> type:
    from channels.base import Channel, Outbound, Outcome, Pacer, Sent

    class CountingNull(Channel):
        """Sends nothing; keeps each delivery id it is handed (written to a file when the process exits)."""

        name = "null"
        sent = array.array("q")

        @classmethod
        def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> CountingNull:
            return cls()

        @classmethod
        def validate_settings(cls, table: Mapping[str, Any]) -> Any:
            return None

        def normalize_address(self, raw: str) -> str:
            return raw.strip()

        async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
            for item in items:
                self.sent.append(item.delivery_id)
                yield item.delivery_id, Sent()

    return CountingNull


def worker_entry(argv: list[str]) -> None:
    """``hub``'s own CLI with ``channels.null`` registered (adapters are found as ``channels.<name>``)."""
    import atexit
    import types

    import channels

    cls = _null_channel()
    module = types.ModuleType("channels.null")
    module.CHANNEL = cls  # type: ignore[attr-defined]
    sys.modules["channels.null"] = module
    channels.null = module  # type: ignore[attr-defined]
    sink = Path(os.environ["HUB_HOSTS_SINK"]) / f"sent-{os.getpid()}.bin"
    profiler = probe.profile_on_signal() if os.environ.get("HUB_HOSTS_PROFILE") else None

    def dump() -> None:
        with sink.open("wb") as file:
            cls.sent.tofile(file)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(sink.with_name(f"profile-{os.getpid()}.prof")))

    atexit.register(dump)
    from hub.cli import app

    app(argv, prog_name="hub")




# ---------------------------------------------------------------------------------------------------------
# One round: W workers spread over the hosts drain one announcement


async def _round(args: argparse.Namespace, ov: dict[str, Any], scratch: Path, workers: int) -> dict[str, Any]:
    from benchmarks.common import last_sent_at, publish_free_text, start_hub, wait_done
    from hub.clock import utcnow

    hub = await start_hub(ov, "benchmarks.pipeline:channels")
    procs: list[Proc] = []
    sink = scratch / f"sink-{workers}"
    sink.mkdir()
    env = {**os.environ, "HUB_HOSTS_SINK": str(sink), "PYTHONPATH": str(ROOT)}
    if args.profile:
        env["HUB_HOSTS_PROFILE"] = "1"
    try:
        for n in range(workers):
            host = n % args.hosts
            settings = write_settings(scratch / f"settings-{host}.toml", ov, host)
            cmd = ["ip", "netns", "exec", f"{PREFIX}{host}", sys.executable, "-m", "benchmarks.hosts"]
            cmd += ["_worker", "--settings", str(settings), "worker"]
            procs.append(Proc(cmd, scratch / f"worker-{workers}-{n}.log", env))
        for proc in procs:
            proc.wait_for("worker started", 90)
        pids = [p.proc.pid for p in procs]
        await asyncio.sleep(1.0)  # the workers' first reconcile and polls, before the clock starts
        cold = None
        if args.warm_up:
            # A first broadcast, measured apart: each process opens its connections (and prepares its
            # statements on each) during it, a cost of starting that grows with the processes started.
            cold0 = cpu_seconds(pids)
            warm_id = await publish_free_text(hub)
            label = f"{workers} worker(s), untimed"
            await wait_done(hub, warm_id, args.count, timeout=args.timeout, label=label)
            cold = (cpu_seconds(pids) - cold0) / args.count * 1000
            await asyncio.sleep(1.0)
        if args.profile:
            for pid in pids:
                os.kill(pid, signal.SIGUSR1)
        cpu0, side0 = cpu_seconds(pids), cpu_seconds(args.side_pids)
        calls0 = probe.redis_calls(args.redis_port)
        start = utcnow()
        t0 = time.perf_counter()
        peak = [0]
        sampler = asyncio.create_task(probe.count_connections(hub, peak))
        message_id = await publish_free_text(hub)
        try:
            status = await wait_done(
                hub, message_id, args.count, timeout=args.timeout, label=f"{workers} worker(s)"
            )
        finally:
            sampler.cancel()
        wall = time.perf_counter() - t0
        cpu, side = cpu_seconds(pids) - cpu0, cpu_seconds(args.side_pids) - side0
        by_command = probe.redis_calls(args.redis_port) - calls0
        calls = sum(by_command.values())
        end = await last_sent_at(hub, message_id)
        sent_rows = status["totals"].get("sent", 0)
    finally:
        for proc in procs:
            proc.stop()
        await hub.close()
    copies: Counter[int] = Counter()
    for path in sink.glob("sent-*.bin"):
        ids = array.array("q")
        ids.frombytes(path.read_bytes())
        copies.update(ids)
    if args.profile:
        probe.keep_profiles(sink, args.profile, workers)
    shutil.rmtree(sink, ignore_errors=True)
    handed = sum(copies.values())
    return {
        "workers": workers,
        "hosts_used": min(workers, args.hosts),
        "elapsed": (end - start).total_seconds(),
        "wall": wall,
        "worker_cpu": cpu,
        "redis_calls": calls,
        "pg_connections_peak": peak[0],
        "redis_by_command": dict(by_command.most_common(20)),
        "side_cpu": side,
        "cpu_per_1000": cpu / args.count * 1000,
        "cold_cpu_per_1000": cold,
        "broadcasts": 2 if args.warm_up else 1,
        "sent_rows": sent_rows,
        "handed": handed,
        "distinct": len(copies),
        "duplicates": handed - len(copies),
        "sink_files": workers,
    }






def run(args: argparse.Namespace) -> Any:
    from benchmarks import common
    from benchmarks.common import (
        Result,
        Row,
        bulk_audience,
        database_url,
        overrides,
        queue_overrides,
        start_hub,
        workspace,
    )

    if os.geteuid() != 0:
        raise SystemExit("benchmarks.hosts needs root: it makes network namespaces, veth links and qdiscs")
    if not common.DATABASE.startswith("postgres"):
        common.DATABASE = common.database_arg("pg")  # workers on several hosts share one PostgreSQL
    counts = [int(x) for x in args.workers.split(",")]
    if args.quick:
        args.count, counts = min(args.count, 4000), [c for c in counts if c <= 2] or [1]
    rounds: list[dict[str, Any]] = []
    cleanup()
    scratch = Path(tempfile.mkdtemp(prefix="hub-bench-hosts-"))
    forwarder: Proc | None = None
    try:
        latency = make_hosts(args.hosts, args.delay_ms)
        with private_redis(scratch) as (redis_port, _redis):
            common.REDIS_URL = f"redis://127.0.0.1:{redis_port}/0"
            args.redis_port = redis_port
            pairs = []
            for i in range(args.hosts):
                pairs.append(f"{root_address(i)}:{PG_PORT}=127.0.0.1:{PG_PORT}")
                pairs.append(f"{root_address(i)}:{REDIS_PORT}=127.0.0.1:{redis_port}")
            delay = args.delay_ms / 1000 if latency == "forwarder" else 0.0
            forwarder = Proc(
                [sys.executable, "-m", "benchmarks.hosts", "_forward", "--delay", str(delay), *pairs],
                scratch / "forwarder.log",
            )
            forwarder.wait_for("ready", 30)
            args.side_pids = [forwarder.proc.pid]
            with workspace("hosts") as tmp:
                ov = overrides(database_url(tmp), **queue_overrides(args.queue))

                async def audience() -> str | None:
                    hub = await start_hub(ov, "benchmarks.pipeline:channels")
                    try:
                        await bulk_audience(hub, args.count, channel="null", address_sql="'null-' || i")
                        return await probe.connection_budget(hub, max(counts))
                    finally:
                        await hub.close()

                warning = asyncio.run(audience())
                if warning:
                    print(f"   NOTE: {warning}", flush=True)
                for n in counts:
                    print(f"   {n} worker(s) over {min(n, args.hosts)} host(s), {args.count:,} deliveries …")
                    rounds.append(asyncio.run(_round(args, ov, scratch, n)))
                    r = rounds[-1]
                    print(
                        f"     {r['worker_cpu']:.1f} CPU-s = {r['cpu_per_1000']:.2f} CPU-s/1000, "
                        f"{args.count / r['elapsed']:,.0f}/s, duplicates {r['duplicates']}, "
                        f"untimed first broadcast {r['cold_cpu_per_1000'] or 0:.2f} CPU-s/1000, "
                        f"{r['redis_calls']:,} Redis commands ({probe.top(r['redis_by_command'])})",
                        flush=True,
                    )
    finally:
        if forwarder is not None:
            forwarder.stop()
        removed = cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
        left = [n for n in run_ip("netns", "list", check=False).stdout.split() if n.startswith(PREFIX)]
        if left:
            print(f"WARNING: namespaces left: {left}", file=sys.stderr)
        print(f"   torn down: {len(removed)} namespaces and links", flush=True)
    base = rounds[0]["cpu_per_1000"]
    result = Result(
        name="hosts",
        title=f"Several hosts: hub workers in network namespaces, {args.delay_ms:g} ms each way",
        params={
            "deliveries": args.count,
            "hosts": args.hosts,
            "delay_ms_each_way": args.delay_ms,
            "latency_by": "tc netem" if latency == "netem" else "forwarder (no sch_netem in this kernel)",
            "timed": "second broadcast after start" if args.warm_up else "first broadcast after start",
        },
    )
    for r in rounds:
        spread = r["cpu_per_1000"] / base - 1
        result.rows.append(
            Row(
                metric=f"{r['workers']} worker(s) on {r['hosts_used']} host(s): "
                "worker CPU-s per 1,000 deliveries",
                value=r["cpu_per_1000"],
                unit="CPU-s/1000",
                ceiling=base,
                ceiling_what="1 worker, same run",
                ratio=r["cpu_per_1000"] / base,
                aim="within 20% of 1 worker",
                vs_aim=AIM_SPREAD / abs(spread) if abs(spread) >= 0.005 else None,
                met=abs(spread) <= AIM_SPREAD,
            )
        )
        result.rows.append(
            Row(
                metric=f"{r['workers']} worker(s): duplicates (copies beyond one per delivery at the sink)",
                value=r["duplicates"],
                unit="deliveries",
                aim="0",
                met=r["duplicates"] == 0
                and r["distinct"] == args.count * r["broadcasts"]
                and r["sent_rows"] == args.count,
            )
        )
        result.notes.append(
            f"{r['workers']} worker(s): {args.count / r['elapsed']:,.0f} deliveries/s publish → last sent "
            f"({r['elapsed']:.1f} s); {r['handed']:,} hand-offs for {r['distinct']:,} distinct deliveries, "
            f"{r['sent_rows']:,} rows sent; {r['redis_calls'] / args.count * 1000:,.0f} Redis commands per "
            f"1,000 deliveries; at most {r['pg_connections_peak']} PostgreSQL connections open; "
            f"forwarder CPU {r['side_cpu']:.1f} s (not in the worker figure)"
            + (
                f"; the untimed first broadcast: {r['cold_cpu_per_1000']:.3f} CPU-s/1000 "
                f"({r['cold_cpu_per_1000'] / rounds[0]['cold_cpu_per_1000']:.2f}× one worker's)"
                if r["cold_cpu_per_1000"] is not None
                else ""
            )
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.common import parser

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4,8", help="worker counts to run, comma-separated")
    p.add_argument("--hosts", type=int, default=4, help="network namespaces (workers spread round-robin)")
    p.add_argument("--delay-ms", type=float, default=1.0, help="latency added each way on every link")
    p.add_argument("--count", type=int, default=40_000, help="deliveries per round")
    p.add_argument("--timeout", type=float, default=1800, help="give up on a round after this many seconds")
    p.add_argument("--cleanup", action="store_true", help="only remove a killed run's namespaces and links")
    p.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="time the first broadcast after the workers start (by default one untimed broadcast goes first)",
    )
    p.add_argument("--profile", metavar="DIR", help="cProfile the workers' rounds into DIR/hosts-<W>.prof")
    return p


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_entry(argv[1:])
    if argv[:1] == ["_forward"]:
        return forward_entry(argv[1:])
    if "--cleanup" in argv:
        print("removed:", ", ".join(cleanup()) or "nothing")
        return None
    from benchmarks.common import cli

    save = "--save-result" in argv
    result = cli(run, build_parser, [a for a in argv if a != "--save-result"])
    if save:
        _save(result, build_parser().parse_args(argv))
    return result


def _save(result: Any, args: argparse.Namespace) -> None:
    """Like ``--save-result`` elsewhere, but one file per link delay and ``--queue`` setting (the page
    shows each beside the others): ``benchmarks/results/hosts.postgresql.delay-ms-1[-queue-…].json``."""
    from benchmarks import common, page

    variant = ["--delay-ms", f"{args.delay_ms:g}"] + [x for q in args.queue for x in ("--queue", q)]
    label = f"{args.delay_ms:g} ms each way" + "".join(f", {q}" for q in args.queue)
    data = {**result.to_dict(), "machine": {**common.machine(), "redis_url": "private redis-server"}}
    print(f"saved {page.save(data, page.RESULTS, 'postgresql', variant, label)}; wrote {page.write()}")


if __name__ == "__main__":
    main()
