"""Prometheus metrics (https://prometheus.io/docs/practices/naming/): what operators graph and alert on.

Two kinds of figures:

- **Process counters**, counted where things happen, in the process where they happen (a worker's sends,
  its pacer waits, its reconciler runs): ``hub_deliveries_total``, ``hub_send_seconds``,
  ``hub_pacer_waits_total``, ``hub_provider_pushback_total``, ``hub_reconciler_actions_total``. Each
  worker serves its own on ``[metrics] worker_port`` (docs/operations.md says why a port per worker and
  not prometheus_client's multiprocess mode); Prometheus sums them over the targets.
- **Deployment gauges**, read from the database and Redis when ``/metrics`` is scraped and kept for
  ``[metrics] state_ttl_seconds``: the age of the oldest due delivery per lane (one index lookup per
  lane), the depth of each arq queue (``ZCARD``). They are the same from every process, so only the API
  (``hub run`` or the API service) serves them.

prometheus_client is imported on first use, never when the ``hub`` command line starts.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hub.clock import utcnow

if TYPE_CHECKING:
    from hub.context import Hub

LANES = ("urgent", "bulk")
#: Send latency buckets in seconds: a local SMTP sink answers in milliseconds, a provider across the
#: internet in a few hundred, a flood-controlled send waits seconds.
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_HTTP_CODE = re.compile(r"\b([45]\d\d)\b")


class _Metrics:
    """The process's metric objects, made once, on the first figure counted or the first scrape."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.deliveries = Counter(
            "hub_deliveries",
            "Deliveries this process recorded, by channel, lane and the state written "
            "(sent, retrying, failed, gone, skipped; delivered, read and failed from delivery reports).",
            ["channel", "lane", "outcome"],
        )
        self.send_seconds = Histogram(
            "hub_send_seconds",
            "Time one send took in the channel adapter (pacing inside the adapter included).",
            ["channel"],
            buckets=SEND_BUCKETS,
        )
        self.pacer_waits = Counter(
            "hub_pacer_waits",
            "Times a send waited at the shared pacer (a rate was used up), by lane and rate family.",
            ["lane", "rate"],
        )
        self.pacer_wait_seconds = Counter(
            "hub_pacer_wait_seconds",
            "Seconds sends spent waiting at the shared pacer, by lane and rate family.",
            ["lane", "rate"],
        )
        self.pushback = Counter(
            "hub_provider_pushback",
            "Sends a provider pushed back: status 429 (rate limited, flood control, M_LIMIT_EXCEEDED) "
            "or 503 (unavailable: a 5xx, a refused or lost connection); retried at no attempt's cost.",
            ["channel", "status"],
        )
        self.reconciler = Counter(
            "hub_reconciler_actions",
            "What the reconciler did: requeued (due, never or long ago enqueued), lost_enqueue (requeued "
            "because Redis lost its data), dead_lease (taken back from a dead worker's claim), "
            "plan_restarted (a stalled fan-out started again). Counted in deliveries (plans for the last).",
            ["action"],
        )
        self.oldest_due = Gauge(
            "hub_oldest_due_delivery_age_seconds",
            "Age of the oldest delivery that is due (queued or retrying, due time passed) per lane; "
            "0 when none is due. Read from the database at scrape, cached briefly.",
            ["lane"],
        )
        self.queue_depth = Gauge(
            "hub_queue_depth",
            "Jobs waiting in the lane's arq queue in Redis (each job is a batch of deliveries).",
            ["lane"],
        )
        self.state_age = Gauge(
            "hub_metrics_state_age_seconds",
            "How old the database and Redis figures of this scrape are (they are cached briefly).",
        )
        self.state_errors = Counter(
            "hub_metrics_state_errors",
            "Scrapes whose database or Redis figures could not be read (the previous ones are served).",
            ["part"],
        )


_made: _Metrics | None = None


def _m() -> _Metrics:
    global _made
    if _made is None:
        _made = _Metrics()
    return _made


# ---------------------------------------------------------------------------------------------------------
# Counting (called from the sender, the pacer and the reconciler)


def deliveries(channel: str, lane: str, counts: dict[str, int]) -> None:
    """Outcomes written for a batch: ``{"sent": 18, "retrying": 2}``."""
    metric = _m().deliveries
    for outcome, n in counts.items():
        if n:
            metric.labels(channel, lane, outcome).inc(n)


def send_took(channel: str, seconds: float) -> None:
    _m().send_seconds.labels(channel).observe(seconds)


def pushback(channel: str, reason: str, delay: float | None) -> None:
    """A provider's "retry later" (``RetryLater(provider=True)``), sorted into 429 or 503.

    Adapters say it in words: an HTTP status in the reason decides; else a given delay or words of flood
    control mean 429 (the provider asked to slow down), anything else (a network error, a gateway down)
    503.
    """
    found = _HTTP_CODE.search(reason)
    if found:
        status = "429" if found.group(1) == "429" else "503"
    elif delay is not None or "flood" in reason.lower() or "LIMIT_EXCEEDED" in reason:
        status = "429"
    else:
        status = "503"
    _m().pushback.labels(channel, status).inc()


def pacer_waited(lane: str, key: str, seconds: float) -> None:
    """``key`` is a rate's key (``tg:chat:123``); only its first part is a label: no addresses in metrics."""
    family = key.split(":", 1)[0]
    metrics = _m()
    metrics.pacer_waits.labels(lane, family).inc()
    metrics.pacer_wait_seconds.labels(lane, family).inc(seconds)


def reconciled(action: str, n: int) -> None:
    if n:
        _m().reconciler.labels(action).inc(n)


# ---------------------------------------------------------------------------------------------------------
# Deployment gauges and the exposition


class _State:
    """When the figures were last read for one hub, and a lock so that concurrent scrapes read them once."""

    def __init__(self, hub: Hub) -> None:
        self.hub = weakref.ref(hub)
        self.read_at = 0.0
        self.lock = asyncio.Lock()


#: By ``id(hub)``; the weak reference tells a hub from a later one that got the same id.
_state: dict[int, _State] = {}


def _state_of(hub: Hub) -> _State:
    state = _state.get(id(hub))
    if state is None or state.hub() is not hub:
        state = _state[id(hub)] = _State(hub)
    return state


async def oldest_due(hub: Hub, lane: str, now: datetime) -> float:
    """Seconds since the oldest pending delivery of ``lane`` became due; 0 when none is due.

    ``min(next_attempt_at)`` over ``lane`` and the pending states: one descent of the partial index
    ``ix_deliveries_lane_pending`` (migration 0012), whatever the table holds.
    """
    from sqlalchemy import func, select, text

    from hub.delivery.states import PENDING, deliveries

    # The states as literals, not parameters: PostgreSQL uses a partial index only when it can prove the
    # query implies the index's predicate, which a cached generic plan with bound states cannot.
    pending = text("state IN (" + ", ".join(f"'{state}'" for state in PENDING) + ")")
    query = select(func.min(deliveries.c.next_attempt_at)).where(deliveries.c.lane == lane, pending)
    async with hub.db.session() as session:
        oldest = await session.scalar(query)
    if oldest is None:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


async def refresh(hub: Hub) -> None:
    """Read the deployment gauges if the cached ones are older than ``metrics.state_ttl_seconds``."""
    from hub.queue import REDIS_DOWN

    ttl = hub.settings.metrics.state_ttl_seconds
    state = _state_of(hub)
    metrics = _m()
    async with state.lock:
        if time.monotonic() - state.read_at < ttl and state.read_at:
            metrics.state_age.set(time.monotonic() - state.read_at)
            return
        try:
            async with asyncio.timeout(3):
                now = utcnow()
                for lane in LANES:
                    metrics.oldest_due.labels(lane).set(await oldest_due(hub, lane, now))
        except Exception:  # a database down: the previous figures stay, the error is counted
            metrics.state_errors.labels("database").inc()
        try:
            if hub.redis is None:
                raise ConnectionError("no Redis")
            async with asyncio.timeout(3):
                for lane in LANES:
                    metrics.queue_depth.labels(lane).set(await hub.queue.depth(lane))
        except (*REDIS_DOWN, ConnectionError):
            metrics.state_errors.labels("redis").inc()
        state.read_at = time.monotonic()
        metrics.state_age.set(0.0)


async def exposition(hub: Hub | None) -> tuple[bytes, str]:
    """The text format of every metric of this process, with fresh-enough deployment gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    _m()
    if hub is not None:
        await refresh(hub)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_worker_metrics(host: str, port: int) -> Any:
    """Serve this worker's counters on ``host:port`` (a thread; prometheus_client's own server).

    Returns the server (``shutdown()`` stops it). A port in use is an ``InvalidInput`` naming the setting.
    """
    from prometheus_client import start_http_server

    from hub.errors import InvalidInput

    _m()
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise InvalidInput(
            f"the worker's metrics port {host}:{port} is not free ({exc.strerror}): give each worker on "
            "a host its own metrics.worker_port (HUB_METRICS__WORKER_PORT, or `hub worker --metrics-port`)"
        ) from exc
    return server
