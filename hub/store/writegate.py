"""SQLite: one write transaction at a time per process, waiting in line, the urgent lane first.

SQLite has one writer. A connection that finds the write lock taken sleeps in SQLite's busy handler,
in steps growing to 100 ms, and tries again; nobody queues, so whoever happens to try right after a
commit wins. With a broadcast's claims and outcome writes (ten jobs) in the same worker, an applicant
update's claim lost that lottery for up to a second now and then while the lock sat idle a third of the
time (measured with ``benchmarks/lanes.py``). Here the transactions of one process wait for each other
in an asyncio line instead: the next one starts the moment the previous one commits, and transactions
of the urgent lane (``urgent`` set by the job that runs them) go before the broadcast's. Between
processes (``hub run`` and the workers) SQLite's busy handler still decides.

PostgreSQL needs none of this: writers there wait on rows, not on one lock (``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator

#: Set by a job of the urgent lane (``hub.delivery.jobs``): its transactions go first.
urgent: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_write_urgent", default=False)
#: This task already holds the gate (a transaction opened inside one does not wait for itself).
_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_write_holding", default=False)


class WriteGate:
    """A lock with two lines (urgent, other), handed over directly at release; cancel-safe."""

    def __init__(self) -> None:
        self.busy = False
        self.lines: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    def waiting(self) -> int:
        return sum(1 for line in self.lines for f in line if not f.done())

    async def acquire(self, first: bool) -> None:
        if not self.busy and not self.waiting():
            self.busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lines[0 if first else 1].append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as the waiter was cancelled: pass it on
            raise

    def release(self) -> None:
        for line in self.lines:
            while line:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(None)  # the gate stays busy: it is the next holder's now
                    return
        self.busy = False

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        if _holding.get():
            yield
            return
        await self.acquire(urgent.get())
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)
            self.release()


class Gates:
    """One gate per event loop (a Database may be used from several loops in tests and CLIs)."""

    def __init__(self) -> None:
        self._gates: dict[asyncio.AbstractEventLoop, WriteGate] = {}

    def get(self) -> WriteGate:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            for old in [lp for lp in self._gates if lp.is_closed()]:
                del self._gates[old]
            gate = self._gates[loop] = WriteGate()
        return gate
