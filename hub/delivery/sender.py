"""Sending one claimed batch: the promises of docs/design.md ("Claims and leases", "Cancel", "Crashes").

The batch goes to the adapter one delivery at a time. Before each hand-off the sender checks that

- the claim's lease still holds with time to spare (a worker whose lease ran out stops: another worker
  may take the rows, and must not find them being sent here as well);
- the message was not cancelled (a Redis key `hub cancel` sets, and the database flag at each flush);
- fewer than ``flush_every`` outcomes wait to be written (backpressure: while the database does not take
  outcomes, nothing more is sent, so the crash bound holds whatever the database does);
- one of the adapter's ``concurrency`` send slots of this process is free (so after cancel at most that
  many sends are still under way in a worker).

Whatever the adapter raises for a delivery ends as that delivery's outcome, never a row left `sending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from channels.base import Channel, Lane, Outbound, Outcome, Rate, Rejected, RetryLater
from hub import metrics
from hub.context import Hub
from hub.delivery.cancels import cancel_watch
from hub.delivery.claim import Claimed, finish, release, renew_lease, skip_unsent
from hub.delivery.record import Recorded, record
from hub.logs import log
from hub.privacy import mask
from hub.queue import REDIS_DOWN
from hub.store.models import Delivery

#: Errors of a database that is slow, locked, restarting or unreachable: the write is tried again.
DB_TROUBLE: tuple[type[BaseException], ...] = (DBAPIError, OSError, TimeoutError)
#: Errors an adapter may raise that say nothing about the recipient: the send is retried later.
TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, *REDIS_DOWN)

_slots: weakref.WeakKeyDictionary[Channel, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def concurrency(channel: Channel) -> int:
    """How many sends the adapter has in flight at most in this process, as its capabilities declare."""
    return channel.capabilities.concurrency or 4


def _slots_of(channel: Channel) -> asyncio.Semaphore:
    slots = _slots.get(channel)
    if slots is None:
        slots = _slots[channel] = asyncio.Semaphore(concurrency(channel))
    return slots


class SteadyPacer:
    """The hub's pacer for adapters, made patient: while Redis is down it waits instead of raising.

    An adapter that met a Redis error mid-send could only call it the recipient's failure; here the send
    simply waits until Redis answers again.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        while True:
            try:
                return await self.inner.wait(rates, lane)
            except REDIS_DOWN:
                await asyncio.sleep(1.0)

    async def acquire(
        self, rates: Sequence[Rate], lane: Lane = "bulk", *, max_pause: float | None = None
    ) -> Any:
        # Telegram paces with slots (acquire/release): a Redis restart here made its sends `failed`
        # (benchmarks/chaos.py, docs/reliability.md).
        while True:
            try:
                return await self.inner.acquire(rates, lane, max_pause=max_pause)
            except REDIS_DOWN:
                await asyncio.sleep(1.0)

    async def release(self, permit: Any) -> None:
        with contextlib.suppress(*REDIS_DOWN):  # the slot frees itself after its lease
            await self.inner.release(permit)

    async def pause(self, key: str, seconds: float) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await self.inner.pause(key, seconds)

    async def paused_for(self, key: str) -> float:
        """No pause known while Redis is down (the SMS circuit asks; a raise made the send `failed`)."""
        try:
            return float(await self.inner.paused_for(key))
        except REDIS_DOWN:
            return 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Lease:
    """The claim's lease as this worker sees it: renewed in the background, trusted with a margin."""

    def __init__(self, hub: Hub, token: str, started: float) -> None:
        self.hub, self.token = hub, token
        self.seconds = hub.settings.queue.lease_seconds
        #: Hand-offs stop this long before the lease would run out, so a send under way finishes while
        #: the rows are still ours (another worker takes them only after the lease ran out).
        self.margin = self.seconds / 3
        self.deadline = started + self.seconds - self.margin
        self.lost = False
        #: Set just before the batch's last write, which also drops the claim row: a renewal that then
        #: finds no claim is that write's doing, not a lost lease.
        self.finishing = False
        self.renewed = asyncio.Event()
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._keep())

    async def stop(self) -> None:
        """End renewals between two of them, never inside one.

        A task cancelled mid-transaction can leave its connection checked out until the garbage collector
        finds it (https://github.com/sqlalchemy/sqlalchemy/issues/8145); on SQLite that connection keeps
        the write lock, and the outcomes of every other batch wait for it (seen here: 17 s of silence
        after a cancel, then sent rows recorded as skipped).
        """
        self.stopping.set()
        if self.task is not None:
            await asyncio.wait([self.task])

    async def _keep(self) -> None:
        failing, every = False, max(0.2, self.seconds / 3)
        last = time.monotonic()
        while not self.lost:
            # Every third of a lease from the start of the previous renewal, however long that one took.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.05, last + every - time.monotonic()))
            if self.stopping.is_set():
                return
            started = last = time.monotonic()
            try:
                held = await renew_lease(self.hub, self.token)
            except DB_TROUBLE as exc:
                if not failing:
                    log.warning("lease_renewal_failed", claim=self.token[:8], error=_short(exc))
                failing = True
                continue
            failing = False
            if not held and self.finishing:
                return
            if not held:
                log.warning("claim_lost", claim=self.token[:8], hint="lease ran out; another worker may send")
                self.lost = True
            else:
                self.deadline = started + self.seconds - self.margin
            self.renewed.set()
            self.renewed.clear()

    async def usable(self) -> bool:
        """True while the lease holds with margin; waits for a late renewal; False once it is lost."""
        while not self.lost and time.monotonic() >= self.deadline:
            if self.task is None or self.task.done():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.renewed.wait(), timeout=self.margin)
            if time.monotonic() >= self.deadline + self.margin:  # the lease itself ran out by now
                self.lost = True
        return not self.lost


class Batch:
    """One claimed batch being sent by one job."""

    def __init__(self, hub: Hub, channel: Channel, claimed: Claimed, started: float) -> None:
        self.hub, self.channel, self.claimed = hub, channel, claimed
        self.name = channel.name
        self.q = hub.settings.queue
        self.lease = _Lease(hub, claimed.token, started)
        self.buffer: list[tuple[int, Outcome]] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.cancelled: set[int] = set()
        #: The claim row was dropped by the last outcome write (``flush(finish=True)``).
        self.finished = False
        self.last_flush = time.monotonic()
        self.pacer = SteadyPacer(hub.pacer)

    async def run(self) -> dict[str, int]:
        unsent = [item.delivery_id for item in self.claimed.items]
        self.lease.start()
        stopped = ""
        try:
            for item in self.claimed.items:
                stopped = await self._stop_reason(item)
                if stopped:
                    break
                if len(self.buffer) >= self.q.flush_every:
                    await self.flush()  # backpressure: nothing more goes out until these are written
                    stopped = await self._stop_reason(item)
                    if stopped:
                        break
                slots = _slots_of(self.channel)
                waits = slots.locked()  # a free slot is taken without yielding: nothing changed meanwhile
                async with slots:
                    stopped = await self._stop_reason(item) if waits else ""  # the wait may have been long
                    if stopped:
                        break
                    outcome = await self._send_one(item)
                unsent.remove(item.delivery_id)
                self.buffer.append((item.delivery_id, outcome))
                if time.monotonic() - self.last_flush > self.q.flush_seconds:
                    await self.flush()
            await self.flush(finish=True)  # all sent: the last write drops the claim as well
        finally:
            await self._settle(unsent, stopped)
        return dict(self.counts)

    async def _stop_reason(self, item: Outbound) -> str:
        message_id = self.claimed.messages.get(item.delivery_id)
        if message_id in self.cancelled or await self._cancelled(message_id):
            return "cancelled"
        if not await self.lease.usable():
            return "lease lost"
        return ""

    async def _cancelled(self, message_id: int | None) -> bool:
        if message_id is None:
            return False
        # Redis down: "not cancelled" here; the database flag is read at every flush.
        hit = await cancel_watch(self.hub).cancelled(message_id)
        if hit:
            self.cancelled.add(message_id)
        return hit

    async def _send_one(self, item: Outbound) -> Outcome:
        """The adapter's outcome for one delivery; whatever it raises becomes the outcome instead."""
        outcome: Outcome | None = None
        began = time.perf_counter()
        try:
            async for delivery_id, said in self.channel.send([item], self.pacer):
                if delivery_id == item.delivery_id:
                    outcome = said
        except Exception as exc:  # an adapter bug must end as an outcome, never a row left `sending`
            transient = isinstance(exc, TRANSIENT)
            log.warning(
                "adapter_failed",
                channel=self.name,
                delivery_id=item.delivery_id,
                address=mask(item.address, self.channel),
                error=_short(exc),
                outcome="retry later" if transient else "rejected",
            )
            if outcome is None:
                reason = f"adapter error: {_short(exc)}"
                outcome = RetryLater(reason) if transient else Rejected(reason)
        if outcome is None:
            log.warning("adapter_said_nothing", channel=self.name, delivery_id=item.delivery_id)
            outcome = RetryLater("the adapter said nothing about this send")
        metrics.send_took(self.name, time.perf_counter() - began)
        if isinstance(outcome, RetryLater) and outcome.provider:
            metrics.pushback(self.name, outcome.reason, outcome.delay)
        if outcome.__class__.__name__ != "Sent":
            log.info(
                "delivery_outcome",
                delivery_id=item.delivery_id,
                channel=self.name,
                outcome=outcome.__class__.__name__,
                address=mask(item.address, self.channel),
            )
        return outcome

    async def flush(self, *, finish: bool = False) -> None:
        """Write the buffered outcomes; a failed write is tried again (the sends never are).

        ``finish``: nothing is left to send; the same transaction drops the claim (``claim.finish``).
        """
        self.last_flush = time.monotonic()
        if not self.buffer:
            return
        self.lease.finishing = finish
        failing, pause = False, 0.2
        while True:
            try:
                recorded: Recorded = await record(
                    self.hub,
                    self.claimed.token,
                    self.buffer,
                    self.claimed.attempts,
                    self.claimed.deadlines,
                    self.claimed.messages,
                    finish=finish,
                )
                break
            except IntegrityError:
                raise
            except DB_TROUBLE as exc:
                if not failing:
                    log.warning(
                        "outcomes_not_written_retrying",
                        claim=self.claimed.token[:8],
                        outcomes=len(self.buffer),
                        error=_short(exc),
                        hint="sending waits until the database takes them",
                    )
                failing = True
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
        if failing:
            log.info("outcomes_written_again", claim=self.claimed.token[:8], outcomes=len(self.buffer))
        self.buffer = []
        self.finished = finish
        self.last_flush = time.monotonic()
        for state, n in recorded.counts.items():
            self.counts[state] += n
        metrics.deliveries(self.name, self.claimed.items[0].lane, recorded.counts)
        self.cancelled |= recorded.cancelled
        if recorded.retry:
            with contextlib.suppress(*REDIS_DOWN):  # else the reconciler queues them once Redis answers
                await requeue_retries(self.hub, recorded.retry)

    async def _settle(self, unsent: list[int], stopped: str) -> None:
        """After the loop (or on the way out): write what is buffered, hand back what was not sent."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._give_back(unsent, stopped))

    async def _give_back(self, unsent: list[int], stopped: str) -> None:
        # Outcomes first, while the lease is still renewed: a renewal the database answers late must
        # not hold back the write that tells other workers these rows were sent.
        token = self.claimed.token
        try:
            await self.flush()
            if unsent:
                await self._hand_back(unsent, stopped)
        finally:
            await self.lease.stop()
        if not self.finished:
            await finish(self.hub, token)

    async def _hand_back(self, unsent: list[int], stopped: str) -> None:
        token = self.claimed.token
        if stopped == "cancelled" or (not stopped and self.cancelled):
            skipped = await skip_unsent(self.hub, token, unsent, "message cancelled")
            self.counts["skipped"] += skipped
            metrics.deliveries(self.name, self.claimed.items[0].lane, {"skipped": skipped})
            log.info("batch_stopped_cancelled", channel=self.name, skipped=skipped)
            return
        released = await release(self.hub, token, unsent, f"not sent: {stopped or 'worker stopping'}")
        if released:
            log.info("batch_released", channel=self.name, rows=len(released), why=stopped or "stop")
            with contextlib.suppress(*REDIS_DOWN):  # else the reconciler queues them
                await self.hub.queue.send(self.claimed.items[0].lane, self.name, released)


async def requeue_retries(hub: Hub, retry: list[tuple[int, datetime]]) -> None:
    """One deferred job per tenth of a second of due time, per lane and channel."""
    async with hub.db.session() as session:
        rows = (
            await session.execute(
                select(Delivery.id, Delivery.lane, Delivery.channel).where(
                    Delivery.id.in_([i for i, _ in retry])
                )
            )
        ).all()
    due = dict(retry)
    groups: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for row in rows:
        tick = math.ceil(due[row.id].replace(tzinfo=UTC).timestamp() * 10)
        groups[(row.lane, row.channel, tick)].append(row.id)
    for (lane, channel, tick), ids in groups.items():
        await hub.queue.send(lane, channel, ids, at=datetime.fromtimestamp(tick / 10, tz=UTC))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
