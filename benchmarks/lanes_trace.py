"""Where an applicant update's time goes (``benchmarks/lanes.py``): stage timestamps and slow spans.

In the worker processes, wrappers around the urgent lane's jobs (plan, send, claim, record) write each
job's times to Redis; background work that may hold the database (the reconciler and its parts) and
every statement slower than 50 ms or pool check-out slower than 20 ms become spans. In the benchmark's
own process, ``Api`` times ``post_update``'s transaction and its queuing of the fan-out.
"""

from __future__ import annotations

import contextvars
import functools
import json
import sys
import time
from typing import Any

from benchmarks.common import median, percentile

TRACE_KEY = "bench:lanes:trace"
SPANS_KEY = "bench:lanes:spans"
#: Stages of one update, in order: (label, from event, to event).
STAGES = (
    ("api transaction", "posted", "committed"),
    ("queue the fan-out", "committed", "plan_queued"),
    ("plan job waits in queue", "plan_queued", "plan_start"),
    ("plan job runs", "plan_start", "plan_end"),
    ("send job waits in queue", "send_enq", "send_start"),
    ("claim", "send_start", "claimed"),
    ("claimed -> sent", "claimed", "sent"),
    ("sent -> recorded", "sent", "recorded"),
)


#: Slow statements and slow pool check-outs of this process: ``[label, start, end]``, sent with the spans.
_slow: list[list[Any]] = []
SLOW_STATEMENT, SLOW_CHECKOUT = 0.05, 0.02


def watch_database(process: str) -> None:
    """Note every statement slower than ``SLOW_STATEMENT`` and every pool check-out slower than
    ``SLOW_CHECKOUT`` (sync events: they run in SQLAlchemy's greenlet, so they only append to a list)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import QueuePool

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["lanes_t0"] = time.time()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        t0 = conn.info.pop("lanes_t0", None)
        if t0 is not None and time.time() - t0 > SLOW_STATEMENT:
            _slow.append([f"{process} sql {' '.join(statement.split()[:4])[:48]}", t0, time.time()])

    original = QueuePool._do_get

    def do_get(pool: Any) -> Any:
        t0 = time.time()
        try:
            return original(pool)
        finally:
            if time.time() - t0 > SLOW_CHECKOUT:
                _slow.append([f"{process} pool check-out", t0, time.time()])

    QueuePool._do_get = do_get  # type: ignore[method-assign]


async def flush_slow(redis: Any) -> None:
    while _slow:
        await redis.rpush(SPANS_KEY, json.dumps(_slow.pop()))


_trace: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("lanes_trace", default=None)
_installed = False


def install_tracer() -> None:
    """Time the urgent lane's plan and send jobs; each job's times go to Redis when it ends.

    ``hub.delivery.jobs`` calls ``claim``, ``hub.delivery.plan`` calls ``plan_chunk`` and ``sender`` calls
    ``record`` by their module names, and ``build_workers`` reads the job functions when the worker is
    built (after ``channels()``).
    """
    global _installed
    if _installed:
        return
    _installed = True
    from hub.delivery import jobs, sender

    watch_database("worker")

    def job(original: Any, kind: str) -> Any:
        @functools.wraps(original)
        async def traced(ctx: dict[str, Any], *args: Any) -> Any:
            if ctx.get("lane") != "urgent":
                return await original(ctx, *args)
            mark = {"enq": ctx["enqueue_time"].timestamp(), "start": time.time()}
            token = _trace.set(mark)
            try:
                return await original(ctx, *args)
            finally:
                _trace.reset(token)
                mark["end"] = time.time()
                key = f"plan:{args[0]}" if kind == "plan" else f"send:{args[1][0]}"
                await ctx["hub"].redis.hset(TRACE_KEY, key, json.dumps(mark))
                await flush_slow(ctx["hub"].redis)

        return traced

    def step(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            try:
                return await original(*args, **kwargs)
            finally:
                mark = _trace.get()
                if mark is not None:
                    mark.setdefault(label, time.time())

        setattr(owner, name, traced)

    def span(owner: Any, name: str) -> None:
        """Background work that may hold the database: its (start, end) goes to Redis as a span."""
        original = getattr(owner, name)

        @functools.wraps(original)
        async def traced(hub_or_ctx: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return await original(hub_or_ctx, *args, **kwargs)
            finally:
                hub = hub_or_ctx["hub"] if isinstance(hub_or_ctx, dict) else hub_or_ctx
                await hub.redis.rpush(SPANS_KEY, json.dumps([name, start, time.time()]))
                await flush_slow(hub.redis)

        setattr(owner, name, traced)

    from hub import audience
    from hub.delivery import plan, retention

    reconcile = sys.modules["hub.delivery.reconcile"]  # the package exports a function of that name
    span(jobs, "reconcile")
    span(reconcile, "due_for_requeue")
    span(reconcile, "messages_to_plan")
    span(retention, "tidy")
    span(audience, "refresh_if_due")
    jobs.plan_message = job(jobs.plan_message, "plan")
    jobs.send_batch = job(jobs.send_batch, "send")
    step(plan, "plan_chunk", "planned")
    step(jobs, "claim", "claimed")
    step(sender, "record", "recorded")


def stages(posted: float, api: tuple[float, float] | None, sent: float, plan: dict, send: dict) -> dict:
    """One update's events on one clock (wall time; all processes run on this machine)."""
    events: dict[str, float | None] = {
        "posted": posted,
        "committed": api[0] if api else None,
        "plan_queued": api[1] if api else None,
        "plan_start": plan.get("start"),
        "plan_end": plan.get("end"),
        "send_enq": send.get("enq"),
        "send_start": send.get("start"),
        "claimed": send.get("claimed"),
        "sent": sent,
        "recorded": send.get("recorded"),
    }
    out = {}
    for label, a, b in STAGES:
        start, end = events.get(a), events.get(b)
        if start is not None and end is not None:
            out[label] = end - start
    return out


class Api:
    """Times the API side of ``post_update``: its transaction, then queuing the fan-out (``plan_soon``)."""

    def __init__(self) -> None:
        from hub.queue import Queue

        self.times: dict[int, tuple[float, float]] = {}
        original = Queue.plan_soon
        times = self.times

        async def plan_soon(queue: Any, message_id: int, lane: str, **kw: Any) -> bool:
            committed = time.time()
            try:
                return await original(queue, message_id, lane, **kw)
            finally:
                times[message_id] = (committed, time.time())

        Queue.plan_soon = plan_soon  # type: ignore[method-assign]


def stage_notes(out: dict[str, Any]) -> list[str]:
    """Per stage: median / p99 / max over the busy updates; then the slowest updates stage by stage."""
    busy = [r for r in out["busy_refs"] if r in out["stages"]]
    if not busy or not any(out["stages"][r] for r in busy):
        return []
    parts = []
    for label, _, _ in STAGES:
        values = [out["stages"][r][label] for r in busy if label in out["stages"][r]]
        if values:
            parts.append(
                f"{label} {median(values) * 1000:.0f}/{percentile(values, 99) * 1000:.0f}/"
                f"{max(values) * 1000:.0f}"
            )
    notes = ["stages during the broadcast, ms median/p99/max: " + "; ".join(parts)]
    slowest = sorted(busy, key=lambda r: out["latencies"][r], reverse=True)[: max(3, len(busy) // 100)]
    for ref in slowest:
        shown = ", ".join(f"{k} {v * 1000:.0f}" for k, v in out["stages"][ref].items() if v >= 0.01)
        start, end = out["posted"][ref], out["posted"][ref] + out["latencies"][ref]
        during = [f"{n} {(b - a) * 1000:.0f}" for n, a, b in out["spans"] if a < end and b > start]
        notes.append(
            f"slow update {out['latencies'][ref] * 1000:.0f} ms: {shown}"
            + (f" (meanwhile: {', '.join(during)})" if during else "")
        )
    longest: dict[str, float] = {}
    for name, a, b in out["spans"]:
        longest[name] = max(longest.get(name, 0.0), b - a)
    if longest:
        notes.append(
            "background work, longest run in ms: "
            + ", ".join(f"{n} {v * 1000:.0f}" for n, v in sorted(longest.items()))
        )
    return notes
