"""What the long-running commands (``hub run``, ``hub worker``) need around the API and the workers.

Kept out of ``hub/cli/`` so the command definitions stay short: the listening socket (bound before
anything says "running", so a busy port is one line naming the setting), the end-of-burst summary,
and the watch for other hubs on the same Redis.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from hub.context import Hub
from hub.delivery import STATES
from hub.errors import InvalidInput
from hub.logs import log
from hub.queue import watch_other_hubs
from hub.store.models import Delivery


def listen_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, or an ``InvalidInput`` that names the setting and flag to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose protocol says
    # TCP, and with Nagle on every response's body waits for the client's delayed ACK of its headers
    # (40 ms on Linux): a few hundred requests a second however fast the hub answers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"port {port} on {host} is already in use (another hub or program listens there): "
                "choose a free one with --port or api.port in the settings file (HUB_API__PORT)"
            ) from None
        raise InvalidInput(
            f"cannot listen on {host}:{port} ({exc.strerror}): change --host/--port or "
            "api.host/api.port in the settings file"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def supervise(work: Callable[[Hub], Awaitable[Any]], hub: Hub, *, pause: float = 5.0) -> None:
    """Run the workers until cancelled; when they fail (Redis gone, say), log once and start them again.

    A long-running hub must outlive an outage of Redis or the database: the database holds the truth and
    the reconciler queues again whatever was lost, so starting over is always safe.
    """
    while True:
        try:
            await work(hub)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("workers_stopped_restarting", error=str(exc)[:300], retry_in_seconds=pause)
            await asyncio.sleep(pause)


def watch_redis_neighbours(hub: Hub) -> asyncio.Task[Any]:
    """Start the watch that logs a warning when another hub's workers use this Redis."""
    assert hub.redis is not None
    return asyncio.ensure_future(
        watch_other_hubs(hub.redis, hub.installation_id, hub.settings.redis.key_prefix)
    )


async def outcomes_since(hub: Hub, since: datetime) -> dict[str, int]:
    """How many deliveries reached each state since ``since`` (naive UTC): the burst's summary."""
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(Delivery.state, func.count())
                .where(Delivery.updated_at >= since)
                .group_by(Delivery.state)
            )
        ).all()
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: n for state, n in rows})
    return counts


def summary_line(counts: dict[str, int]) -> str:
    """``drained: 2 sent, 0 failed`` and every other state that occurred, in a fixed order."""
    sent = counts.get("sent", 0) + counts.get("delivered", 0) + counts.get("read", 0)
    parts = [f"{sent} sent", f"{counts.get('failed', 0)} failed"]
    for state in ("retrying", "gone", "skipped", "queued", "sending"):
        if counts.get(state):
            parts.append(f"{counts[state]} {_word(state)}")
    return "drained: " + ", ".join(parts)


def _word(state: str) -> str:
    return {"retrying": "to retry later", "gone": "recipients gone", "queued": "still queued"}.get(
        state, state
    )
