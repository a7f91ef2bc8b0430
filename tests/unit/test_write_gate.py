"""SQLite's write gate: one write transaction at a time per process, the urgent lane's first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from hub.store import writegate
from hub.store.db import Database
from hub.store.writegate import WriteGate


async def _hold(gate: WriteGate, order: list[str], name: str, urgent: bool, seconds: float = 0.01) -> None:
    writegate.urgent.set(urgent)
    async with gate.held():
        order.append(name)
        await asyncio.sleep(seconds)


async def test_an_urgent_write_goes_before_the_broadcast_writes_already_waiting() -> None:
    gate, order = WriteGate(), []
    first = asyncio.create_task(_hold(gate, order, "bulk-0", False, 0.05))
    await asyncio.sleep(0.01)  # bulk-0 holds the gate
    waiting = [asyncio.create_task(_hold(gate, order, f"bulk-{i}", False)) for i in range(1, 4)]
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(_hold(gate, order, "urgent", True))
    await asyncio.gather(first, *waiting, urgent)
    assert order == ["bulk-0", "urgent", "bulk-1", "bulk-2", "bulk-3"]
    assert not gate.busy


async def test_a_waiter_cancelled_in_line_does_not_keep_the_gate() -> None:
    gate, order = WriteGate(), []
    first = asyncio.create_task(_hold(gate, order, "a", False, 0.03))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(_hold(gate, order, "b", False))
    after = asyncio.create_task(_hold(gate, order, "c", False))
    await asyncio.sleep(0.005)
    cancelled.cancel()
    await asyncio.wait_for(asyncio.gather(first, after, cancelled, return_exceptions=True), 1)
    assert order == ["a", "c"]
    assert not gate.busy


async def test_sqlite_transactions_wait_in_line_and_a_nested_one_does_not_wait_for_itself(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))

        async def write(i: int) -> None:
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES (:x)"), {"x": i})
                async with db.transaction() as inner:  # same task: must not deadlock
                    await inner.execute(text("SELECT count(*) FROM t"))

        await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(20))), 10)
        async with db.session() as session:
            assert await session.scalar(text("SELECT count(*) FROM t")) == 20
    finally:
        await db.dispose()
