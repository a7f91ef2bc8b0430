"""Outcomes: recorded only for rows this claim still holds, so states only move forward."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from channels.base import Moved, Outcome, RecipientGone, Rejected, RetryLater, Sent
from hub.clock import utcnow
from hub.context import Hub
from hub.delivery.claim import finish_statement
from hub.delivery.fallback import fall_back
from hub.delivery.states import deliveries
from hub.store import writegate
from hub.store.models import (
    Delivery,
    Endpoint,
    Message,
)

_record = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("b_id"),
        deliveries.c.claim == bindparam("b_claim"),
        deliveries.c.state == "sending",
    )
    .values(
        state=bindparam("b_state"),
        attempts=deliveries.c.attempts + bindparam("b_spent"),
        provider_id=bindparam("b_provider"),
        error=bindparam("b_error"),
        sent_at=bindparam("b_sent_at"),
        next_attempt_at=bindparam("b_next"),
        lease_until=None,
        updated_at=bindparam("b_now"),
    )
)


_cancelled = select(Message.id).where(
    Message.id.in_(bindparam("ids", expanding=True)), Message.state == "cancelled"
)


@dataclass
class Recorded:
    retry: list[tuple[int, datetime]]
    counts: dict[str, int]
    #: Messages of these outcomes that were cancelled meanwhile (the sender stops their rows).
    cancelled: set[int] = field(default_factory=set)


async def record(
    hub: Hub,
    token: str,
    results: Sequence[tuple[int, Outcome]],
    attempts: dict[int, int],
    deadlines: dict[int, datetime] | None = None,
    messages: dict[int, int] | None = None,
    *,
    finish: bool = False,
) -> Recorded:
    """Write a group of outcomes in one transaction; returns what must be retried and when.

    Writing the same group twice changes nothing the second time (only rows this claim still holds in
    ``sending`` are written), so a write that failed may simply be tried again. Rows are written in id
    order, the one order every multi-row lock in the hub follows. ``finish``: the claim's last write, which
    also drops the claim row when none of its rows is still ``sending`` (``claim.finish``, one
    transaction fewer per batch).
    """
    q = hub.settings.queue
    now = utcnow()
    params: list[dict[str, Any]] = []
    retry: list[tuple[int, datetime]] = []
    gone: dict[int, str] = {}
    moved: dict[int, str] = {}
    counts: dict[str, int] = defaultdict(int)
    for delivery_id, outcome in sorted(results, key=lambda r: r[0]):
        state, provider, error, sent_at, next_at, spent = "failed", None, None, None, now, 1
        match outcome:
            case Sent(provider_id=pid):
                state, provider, sent_at = "sent", pid, now
            case RetryLater(reason=reason, delay=delay, provider=provider_trouble):
                # The provider's trouble (flood control, a gateway down) is not the recipient's: it
                # spends no attempt, and only time (valid-until or the retry horizon) ends the retries.
                spent = 0 if provider_trouble else 1
                tries = attempts.get(delivery_id, 0) + spent
                wait = delay if delay is not None else backoff(max(1, tries), q)
                next_at = now + timedelta(seconds=wait)
                deadline = (deadlines or {}).get(delivery_id)
                if spent and tries >= q.max_attempts:
                    state, error = "failed", f"gave up after {tries} attempts: {reason}"
                elif deadline is not None and next_at > deadline and not outcome.quota:  # quota: valid-until
                    state, error = "failed", f"gave up at the message's retry deadline: {reason}"
                else:
                    state, error = "retrying", reason
                    retry.append((delivery_id, next_at))
            case RecipientGone(reason=reason):
                state, error = "gone", reason
                gone[delivery_id] = reason
            case Rejected(reason=reason):
                state, error = "failed", reason
            case Moved(new_address=address):
                state, error = "retrying", "moved to a new address"
                moved[delivery_id] = address
                retry.append((delivery_id, now))
        counts[state] += 1
        params.append(
            {
                "b_id": delivery_id,
                "b_claim": token,
                "b_state": state,
                "b_spent": spent,
                "b_provider": provider,
                "b_error": error[:500] if error else None,
                "b_sent_at": sent_at,
                "b_next": next_at,
                "b_now": now,
            }
        )
    if not params:
        return Recorded([], {})
    wanted = {messages[i] for i, _ in results if messages and i in messages}
    part = _Part(token, params, gone, moved, results, now, finish, wanted)
    extra, cancelled = await _writer(hub).write(part)
    return Recorded(retry + extra, dict(counts), cancelled)


@dataclass
class _Part:
    """One ``record`` call's share of a group write."""

    token: str
    params: list[dict[str, Any]]
    gone: dict[int, str]
    moved: dict[int, str]
    results: Sequence[tuple[int, Outcome]]
    now: datetime
    finish: bool
    #: Messages whose cancel flag the caller wants read.
    wanted: set[int]


class _Writer:
    """Group commit: the outcome writes of this process's jobs that wait together go in one transaction.

    While one write runs, the ``record`` calls that arrive queue up; the next write takes all of them. Each
    caller still waits until its own outcomes are committed, so a job has no more unrecorded sends than
    before (the crash bound in docs/design.md); the process pays one transaction, one cancel read and one
    commit per group instead of per job (on SQLite the jobs' writes waited in line for the one write lock
    anyway). A group that fails is written again part by part, so one job's bad part fails only that job.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.loop = asyncio.get_running_loop()
        self.waiting: list[tuple[_Part, asyncio.Future[tuple[list[tuple[int, datetime]], set[int]]]]] = []
        self.task: asyncio.Task[None] | None = None

    async def write(self, part: _Part) -> tuple[list[tuple[int, datetime]], set[int]]:
        answer: asyncio.Future[tuple[list[tuple[int, datetime]], set[int]]] = self.loop.create_future()
        self.waiting.append((part, answer))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return await answer

    async def _run(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting, []
            try:
                answers = await _write(self.hub, [part for part, _ in group])
            except Exception as exc:
                if len(group) == 1:
                    _answer(group[0][1], exc)
                    continue
                for part, answer in group:  # alone, so only the part at fault fails
                    try:
                        _answer(answer, (await _write(self.hub, [part]))[0])
                    except Exception as alone:
                        _answer(answer, alone)
                continue
            for (_, answer), result in zip(group, answers, strict=True):
                _answer(answer, result)


def _answer(answer: asyncio.Future[Any], result: Any) -> None:
    if answer.done():  # its caller was cancelled; the outcomes are written all the same
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)


_writers: weakref.WeakKeyDictionary[Any, dict[bool, _Writer]] = weakref.WeakKeyDictionary()


def _writer(hub: Hub) -> _Writer:
    """The writer of this hub's database in this event loop; the urgent lane's writes have their own (on
    SQLite their transactions go before the broadcast's, ``hub.store.writegate``)."""
    writers = _writers.setdefault(hub.db, {})
    urgent = writegate.urgent.get()
    writer = writers.get(urgent)
    if writer is None or writer.loop is not asyncio.get_running_loop() or writer.hub is not hub:
        writer = writers[urgent] = _Writer(hub)
    return writer


async def _write(hub: Hub, parts: list[_Part]) -> list[tuple[list[tuple[int, datetime]], set[int]]]:
    """One transaction for ``parts``: their rows in id order, then each part's rare extras."""
    wanted = sorted({m for part in parts for m in part.wanted})
    params = sorted((row for part in parts for row in part.params), key=lambda row: row["b_id"])
    answers = []
    # One Core connection: the cancel flags are read first (SQLite takes its write lock only at the first
    # write, so the read holds nothing), then the outcomes are written in the same transaction.
    async with hub.db.connection(write=True) as conn:
        cancelled: set[int] = set()
        if wanted:
            cancelled = set((await conn.execute(_cancelled, {"ids": wanted})).scalars())
        await conn.execute(_record, params)
        for part in parts:
            retry: list[tuple[int, datetime]] = []
            gone, results, now = part.gone, part.results, part.now
            if gone:
                await _deactivate(conn, gone)
                retry += await fall_back(hub, conn, results, now)  # RecipientGone.fallback: queued as a retry
            for delivery_id, address in sorted(part.moved.items()):
                await _move(conn, delivery_id, address)
            answers.append((retry, cancelled & part.wanted))
        for part in parts:
            if part.finish:
                await conn.execute(finish_statement(part.token))
    return answers


async def _deactivate(session: Any, gone: dict[int, str]) -> None:
    rows = (
        await session.execute(
            select(Delivery.id, Delivery.endpoint_id)
            .where(Delivery.id.in_(list(gone)))
            .order_by(Delivery.endpoint_id)
        )
    ).all()
    for delivery_id, endpoint_id in rows:
        await session.execute(
            update(Endpoint.__table__)
            .where(Endpoint.__table__.c.id == endpoint_id)
            .values(active=False, deactivated_reason=gone[delivery_id][:300])
        )


async def _move(session: Any, delivery_id: int, address: str) -> None:
    endpoint_id = await session.scalar(select(Delivery.endpoint_id).where(Delivery.id == delivery_id))
    try:
        async with session.begin_nested():
            await session.execute(
                update(Endpoint.__table__)
                .where(Endpoint.__table__.c.id == endpoint_id)
                .values(address=address)
            )
    except IntegrityError:
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(state="failed", error="moved to an address another endpoint already has")
        )


def backoff(attempt: int, q: Any) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering provider is not stampeded."""
    ceiling = min(q.retry_max_seconds, q.retry_base_seconds * (2 ** max(0, attempt - 1)))
    return random.uniform(q.retry_base_seconds / 2, max(q.retry_base_seconds / 2, ceiling))
