"""Lanes: latency of applicant updates (urgent lane) while a 100,000-recipient broadcast drains (bulk lane).

The broadcast goes to a ``null`` channel that waits ``--send-delay`` per item (so it takes a while); each
applicant case has one endpoint on a ``recorder`` channel that writes the send time of every delivery to
Redis. ``--updates`` updates (``open_case`` up front, ``post_update`` during the drain, each in its own
task as concurrent intake requests would be) are spread over the estimated drain; latency = send time −
the moment ``post_update`` was called. The ceiling is the same measurement with an idle hub, before the
broadcast, in the same run. Aim: p99 under 0.5 s.

Every update is traced through its stages (``--no-trace`` to switch off): the API's transaction, queuing
the fan-out, the plan job's wait in its queue and its run, the send job's wait, claim, send and record.
The worker-side timestamps come from wrappers ``benchmarks.lanes_trace`` installs in the worker processes
only; the notes give each stage's median/p99/max and, for the slowest 1%, what ran meanwhile.

    python -m benchmarks.lanes [--database pg] [--count 100000] [--updates 500] [--send-delay 0.0005]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from benchmarks import lanes_trace
from benchmarks.common import (
    REDIS_URL,
    Result,
    Row,
    bulk_audience,
    cli,
    database_url,
    median,
    overrides,
    parser,
    percentile,
    publish_free_text,
    queue_overrides,
    start_hub,
    wait_done,
    workspace,
)
from benchmarks.pipeline import NullChannel
from benchmarks.workers import HubWorkers
from channels.base import Channel, Outbound, Outcome, Pacer, Sent

CHANNELS = "benchmarks.lanes:channels"
OFFICE = "kota-pekalongan"
AIM_P99 = 0.5
DELAY_ENV = "HUB_BENCH_SEND_DELAY"
TRACE_ENV = "HUB_BENCH_LANES_TRACE"
SENT_KEY = "bench:lanes:sent"
TRACE_KEY = "bench:lanes:trace"
SPANS_KEY = "bench:lanes:spans"


class SlowNullChannel(NullChannel):
    """Sends nothing, but takes ``delay`` seconds per item, like a provider answering quickly."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            await asyncio.sleep(self.delay)
            yield item.delivery_id, Sent()


class RecorderChannel(Channel):
    """Records when each delivery is sent (wall clock and delivery id, into Redis, keyed by address)."""

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
            await self.redis.hsetnx(SENT_KEY, item.address, f"{time.time()!r},{item.delivery_id}")
            yield item.delivery_id, Sent()


def channels() -> dict[str, Channel]:
    """The benchmark's channels; in a worker process (spawned with the env set) also the stage tracer."""
    if os.environ.get(TRACE_ENV) == "1" and multiprocessing.parent_process() is not None:
        lanes_trace.install_tracer()
    return {
        "null": SlowNullChannel(float(os.environ.get(DELAY_ENV, "0.0005"))),
        "recorder": RecorderChannel(),
    }


# ---------------------------------------------------------------------------------------------------------
# The run


async def _post(hub: Any, reference: str, posts: dict[str, tuple[float, float, int]]) -> None:
    """Post one update; keeps (wall time at the call, seconds the call took, message id)."""
    from hub import applicants

    posted = time.time()
    t0 = time.perf_counter()
    message_id = await applicants.post_update(
        hub, OFFICE, reference, applicants.UpdateInput(status="verified")
    )
    posts[reference] = (posted, time.perf_counter() - t0, message_id)


async def _sent_times(hub: Any, wanted: int, timeout: float) -> dict[str, tuple[float, int]]:
    deadline = time.monotonic() + timeout
    while True:
        raw = await hub.redis.hgetall(SENT_KEY)
        if len(raw) >= wanted or time.monotonic() > deadline:
            out = {}
            for k, v in raw.items():
                at, _, delivery_id = v.decode().partition(",")
                out[k.decode()] = (float(at), int(delivery_id))
            return out
        await asyncio.sleep(0.02)


async def _final(hub: Any, message_id: int) -> int:
    from hub import delivery

    status = await delivery.status(hub, message_id)
    assert status is not None
    return sum(status["totals"][s] for s in delivery.FINAL)


class _Drain:
    """The broadcast's progress, read once a second: how many are final, and the recent rate."""

    def __init__(self, hub: Any, message_id: int, count: int) -> None:
        self.hub, self.message_id, self.count = hub, message_id, count
        self.started = time.monotonic()
        self.final, self.rate = 0, 0.0

    async def watch(self) -> None:
        previous = (self.started, 0)
        while self.final < self.count:
            await asyncio.sleep(1.0)
            final, now = await _final(self.hub, self.message_id), time.monotonic()
            if final > previous[1]:
                self.rate = (final - previous[1]) / (now - previous[0])
            self.final, previous = final, (now, final)

    def seconds_left(self) -> float:
        rate = self.rate or self.final / max(0.1, time.monotonic() - self.started)
        return (self.count - self.final) / rate if rate > 0 else 10.0


async def _run(args: argparse.Namespace, ov: dict[str, Any]) -> dict[str, Any]:
    from hub import applicants

    hub = await start_hub(ov, CHANNELS)
    api = lanes_trace.Api()
    if os.environ.get(TRACE_ENV) == "1":
        lanes_trace.watch_database("api")
    try:
        await bulk_audience(hub, args.count, channel="null", address_sql="'null-' || i")
        refs = [f"BENCH-{i:05d}" for i in range(args.idle + args.updates)]
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
        posts: dict[str, tuple[float, float, int]] = {}
        with HubWorkers(ov, channels=CHANNELS, count=args.workers) as workers:
            # the ceiling: an idle hub, one update at a time
            for ref in refs[: args.idle]:
                await _post(hub, ref, posts)
                await _sent_times(hub, len(posts), timeout=30)
            # the broadcast, with updates spread over ~75% of its estimated drain
            message_id = await publish_free_text(hub)
            drain = _Drain(hub, message_id, args.count)
            watcher = asyncio.create_task(drain.watch())
            await asyncio.sleep(args.warmup)
            tasks = []
            for n, ref in enumerate(refs[args.idle :]):
                tasks.append(asyncio.create_task(_post(hub, ref, posts)))
                left = args.updates - n - 1
                if left:
                    await asyncio.sleep(0.75 * drain.seconds_left() / left)
            pending_at_last = (args.count - drain.final) / args.count
            spread = time.monotonic() - drain.started
            await asyncio.gather(*tasks)
            status = await wait_done(hub, message_id, args.count, timeout=args.timeout, label="broadcast")
            drain_seconds = time.monotonic() - drain.started
            watcher.cancel()
            sent = await _sent_times(hub, len(refs), timeout=60)
            workers.check()
        raw = await hub.redis.hgetall(lanes_trace.TRACE_KEY)
        traces = {k.decode(): json.loads(v) for k, v in raw.items()}
        await lanes_trace.flush_slow(hub.redis)
        spans = [json.loads(v) for v in await hub.redis.lrange(lanes_trace.SPANS_KEY, 0, -1)]
        stages: dict[str, dict[str, float]] = {}
        for ref, (posted, _, mid) in posts.items():
            if ref in sent:
                at, delivery_id = sent[ref]
                plan, send = traces.get(f"plan:{mid}", {}), traces.get(f"send:{delivery_id}", {})
                stages[ref] = lanes_trace.stages(posted, api.times.get(mid), at, plan, send)
        latencies = {ref: sent[ref][0] - posts[ref][0] for ref in posts if ref in sent}
        return {
            "idle": [latencies[r] for r in refs[: args.idle] if r in latencies],
            "busy": [latencies[r] for r in refs[args.idle :] if r in latencies],
            "latencies": latencies,
            "posted": {ref: posts[ref][0] for ref in posts},
            "spans": spans,
            "stages": stages,
            "busy_refs": refs[args.idle :],
            "calls": [posts[r][1] for r in refs[args.idle :]],
            "missing": len(refs) - len(latencies),
            "pending_at_last": pending_at_last,
            "spread": spread,
            "drain": drain_seconds,
            "totals": status["totals"],
        }
    finally:
        await hub.close()


def run(args: argparse.Namespace) -> Result:
    if args.quick:
        args.count, args.updates, args.idle = min(args.count, 5000), min(args.updates, 20), min(args.idle, 5)
    os.environ[DELAY_ENV] = str(args.send_delay)
    os.environ[TRACE_ENV] = "0" if args.no_trace else "1"
    with workspace("lanes") as tmp:
        ov = overrides(database_url(tmp), **queue_overrides(args.queue))
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
            "idle_updates": args.idle,
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
                metric=f"applicant update latency, p99 of {len(busy)}",
                value=p99,
                unit="s",
                ceiling=idle_p99,
                ceiling_what=f"idle hub, p99 of {len(idle)}",
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
        f"median {median(out['calls']) * 1000:.0f} ms, max {max(out['calls']) * 1000:.0f} ms; "
        f"broadcast {out['totals']}"
    )
    result.notes.extend(lanes_trace.stage_notes(out))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="broadcast recipients")
    p.add_argument("--updates", type=int, default=500, help="applicant updates during the drain")
    p.add_argument("--idle", type=int, default=100, help="applicant updates on the idle hub (the ceiling)")
    p.add_argument(
        "--send-delay", type=float, default=0.0005, help="seconds per broadcast item (null channel)"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between publish and the first update")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes")
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    p.add_argument("--no-trace", action="store_true", help="do not time the stages in the workers")
    return p


def main(argv: list[str] | None = None) -> Result:
    return cli(run, build_parser, argv)


if __name__ == "__main__":
    main()
