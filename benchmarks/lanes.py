"""Lanes: latency of applicant updates (urgent lane) while a 100,000-recipient broadcast drains (bulk lane).

The broadcast goes to a ``null`` channel that waits ``--send-delay`` per item (so it takes a while); each
applicant case has one endpoint on a ``recorder`` channel that writes the send time of every delivery to
Redis. About 50 updates (``open_case`` up front, ``post_update`` during the drain) are spaced over the
estimated drain; latency = send time − the moment ``post_update`` was called. The ceiling is the same
measurement with an idle hub, before the broadcast. Aim: p99 under 2 s.

    python -m benchmarks.lanes [--count 100000] [--updates 50] [--send-delay 0.0005]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from benchmarks.common import (
    REDIS_URL,
    HubWorkers,
    Result,
    Row,
    bulk_audience,
    cli,
    median,
    overrides,
    parser,
    percentile,
    publish_free_text,
    queue_overrides,
    sqlite_url,
    start_hub,
    wait_done,
    workspace,
)
from benchmarks.pipeline import NullChannel
from channels.base import Channel, Outbound, Outcome, Pacer, Sent

CHANNELS = "benchmarks.lanes:channels"
OFFICE = "kota-pekalongan"
AIM_P99 = 2.0
DELAY_ENV = "HUB_BENCH_SEND_DELAY"
SENT_KEY = "bench:lanes:sent"


class SlowNullChannel(NullChannel):
    """Sends nothing, but takes ``delay`` seconds per item, like a provider answering quickly."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            await asyncio.sleep(self.delay)
            yield item.delivery_id, Sent()


class RecorderChannel(Channel):
    """Records when each delivery is sent (wall clock, into Redis, keyed by address)."""

    name = "recorder"
    batch_size = 100

    def __init__(self) -> None:
        self.redis: Any = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> RecorderChannel:
        return cls()

    def normalize_address(self, raw: str) -> str:
        return raw.strip()

    async def open(self) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(REDIS_URL)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            await self.redis.hsetnx(SENT_KEY, item.address, repr(time.time()))
            yield item.delivery_id, Sent()


def channels() -> dict[str, Channel]:
    return {
        "null": SlowNullChannel(float(os.environ.get(DELAY_ENV, "0.0005"))),
        "recorder": RecorderChannel(),
    }


# ---------------------------------------------------------------------------------------------------------


async def _post(hub: Any, reference: str) -> tuple[float, float]:
    """Post one update; returns (wall time at the call, seconds the call took)."""
    from hub import applicants

    posted = time.time()
    t0 = time.perf_counter()
    await applicants.post_update(hub, OFFICE, reference, applicants.UpdateInput(status="verified"))
    return posted, time.perf_counter() - t0


async def _sent_times(hub: Any, wanted: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        raw = await hub.redis.hgetall(SENT_KEY)
        if len(raw) >= wanted or time.monotonic() > deadline:
            return {k.decode(): float(v) for k, v in raw.items()}
        await asyncio.sleep(0.05)


async def _final(hub: Any, message_id: int) -> int:
    from hub import delivery

    status = await delivery.status(hub, message_id)
    assert status is not None
    return sum(status["totals"][s] for s in delivery.FINAL)


async def _run(args: argparse.Namespace, ov: dict[str, Any]) -> dict[str, Any]:
    from hub import applicants

    hub = await start_hub(ov, CHANNELS)
    try:
        await bulk_audience(hub, args.count, channel="null", address_sql="'null-' || i")
        refs = [f"BENCH-{i:04d}" for i in range(args.idle + args.updates)]
        for ref in refs:
            await applicants.open_case(
                hub,
                OFFICE,
                applicants.CaseInput(
                    reference=ref,
                    document="KTP-el",
                    contacts=[applicants.Contact(channel="recorder", address=ref)],
                ),
            )
        posts: dict[str, tuple[float, float]] = {}
        with HubWorkers(ov, channels=CHANNELS, count=args.workers) as workers:
            # the ceiling: an idle hub
            for ref in refs[: args.idle]:
                posts[ref] = await _post(hub, ref)
                await _sent_times(hub, len(posts), timeout=30)
            # the broadcast, with updates spaced over its estimated drain
            started = time.monotonic()
            message_id = await publish_free_text(hub)
            await asyncio.sleep(args.warmup)
            pending_at_last = 1.0
            previous = (time.monotonic(), 0)
            for n, ref in enumerate(refs[args.idle :]):
                began = time.monotonic()
                posts[ref] = await _post(hub, ref)
                final = await _final(hub, message_id)
                pending_at_last = (args.count - final) / args.count
                left = args.updates - n - 1
                if not left:
                    break
                # space the rest over ~75% of the remaining drain, from the recent drain rate
                now = time.monotonic()
                rate = (final - previous[1]) / (now - previous[0]) if final > previous[1] else 0.0
                rate = rate or final / max(0.1, now - started)
                previous = (now, final)
                remaining = (args.count - final) / rate if rate > 0 else 10.0
                await asyncio.sleep(max(0.0, 0.75 * remaining / left - (now - began)))
            spread = time.monotonic() - started
            status = await wait_done(hub, message_id, args.count, timeout=args.timeout, label="broadcast")
            drain = time.monotonic() - started
            sent = await _sent_times(hub, len(refs), timeout=60)
            workers.check()
        latencies = {ref: sent[ref] - posts[ref][0] for ref in posts if ref in sent}
        idle = [latencies[r] for r in refs[: args.idle] if r in latencies]
        busy = [latencies[r] for r in refs[args.idle :] if r in latencies]
        calls = [posts[r][1] for r in refs[args.idle :]]
        return {
            "idle": idle,
            "busy": busy,
            "calls": calls,
            "missing": len(refs) - len(latencies),
            "pending_at_last": pending_at_last,
            "spread": spread,
            "drain": drain,
            "totals": status["totals"],
        }
    finally:
        await hub.close()


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count, args.updates, args.idle = min(args.count, 5000), min(args.updates, 10), min(args.idle, 5)
    os.environ[DELAY_ENV] = str(args.send_delay)
    with workspace("lanes") as tmp:
        ov = overrides(sqlite_url(tmp), **queue_overrides(args.queue))
        print(
            f"   {args.count:,}-recipient broadcast, {args.updates} applicant updates, "
            f"{args.workers} worker process(es) …",
            flush=True,
        )
        out = asyncio.run(_run(args, ov))
    busy, idle = out["busy"], out["idle"]
    if not busy:
        raise RuntimeError("no applicant update was delivered")
    p50, p99 = median(busy), percentile(busy, 99)
    idle_p50 = median(idle) if idle else None
    idle_p99 = percentile(idle, 99) if idle else None
    result = Result(
        name="lanes",
        title="Lanes: applicant-update latency during a broadcast",
        params={
            "broadcast": args.count,
            "updates": args.updates,
            "send_delay": args.send_delay,
            "worker_processes": args.workers,
        },
        rows=[
            Row(
                metric="applicant update latency, median",
                value=p50,
                unit="s",
                ceiling=idle_p50,
                ceiling_what="idle hub, median",
                ratio=p50 / idle_p50 if idle_p50 else None,
            ),
            Row(
                metric="applicant update latency, p99",
                value=p99,
                unit="s",
                ceiling=idle_p99,
                ceiling_what="idle hub, p99",
                ratio=p99 / idle_p99 if idle_p99 else None,
                aim=f"< {AIM_P99:g} s",
                vs_aim=AIM_P99 / p99,
                met=p99 < AIM_P99,
            ),
            Row(
                metric="broadcast still pending at the last update",
                value=100 * out["pending_at_last"],
                unit="%",
            ),
        ],
    )
    result.notes.append(
        f"{len(busy)} updates over {out['spread']:.0f} s of a {out['drain']:.0f} s drain "
        f"(max latency {max(busy):.2f} s, {out['missing']} never recorded); post_update itself took "
        f"median {median(out['calls']) * 1000:.0f} ms, max {max(out['calls']) * 1000:.0f} ms"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="broadcast recipients")
    p.add_argument("--updates", type=int, default=50, help="applicant updates during the drain")
    p.add_argument("--idle", type=int, default=10, help="applicant updates on the idle hub (the ceiling)")
    p.add_argument(
        "--send-delay", type=float, default=0.0005, help="seconds per broadcast item (null channel)"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between publish and the first update")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
