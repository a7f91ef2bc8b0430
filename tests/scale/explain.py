"""Capture the SQL the hub's own functions send, and read PostgreSQL's plan for each statement.

A ``before_cursor_execute`` listener on the engine keeps every statement with its parameters exactly as
the driver receives them; ``EXPLAIN (FORMAT JSON)`` of the same text with the same parameters is the plan
PostgreSQL makes for that call (https://www.postgresql.org/docs/15/sql-explain.html). Nothing is executed
again: ``EXPLAIN`` without ``ANALYZE`` only plans.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from hub.context import Hub

#: Tables with a million rows or more at province scale: reading one whole is what must never happen.
BIG = ("deliveries", "endpoints", "subscriptions", "subscribers")


@dataclass
class Statement:
    sql: str
    params: tuple[Any, ...]
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return " ".join(self.sql.split())[:160]


@contextmanager
def capture(hub: Hub) -> Iterator[list[Statement]]:
    """Every data statement the engine sends while the block runs (``executemany``: its first row)."""
    sent: list[Statement] = []

    def listen(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, many: bool) -> None:
        if sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            sent.append(Statement(sql, tuple(params[0] if many else params or ())))

    engine = hub.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", listen)


async def explain(hub: Hub, statements: list[Statement]) -> list[Statement]:
    async with hub.db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        for s in statements:
            answer = await raw.fetchval(f"EXPLAIN (FORMAT JSON) {s.sql}", *s.params)
            # The hub's engine decodes json itself; a plain connection would hand over text.
            s.plan = (json.loads(answer) if isinstance(answer, str) else answer)[0]["Plan"]
    return statements


async def analyze(hub: Hub, s: Statement) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)``: the statement runs, in a transaction that is rolled back."""
    async with hub.db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        undo = raw.transaction()
        await undo.start()
        try:
            answer = await raw.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {s.sql}", *s.params)
        finally:
            await undo.rollback()
    return (json.loads(answer) if isinstance(answer, str) else answer)[0]["Plan"]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def scans(plan: dict[str, Any], table: str) -> list[dict[str, Any]]:
    return [n for n in nodes(plan) if n.get("Relation Name") == table]


def problems(s: Statement, *, rows: float, cost: float) -> list[str]:
    """What is wrong with a plan: a big table read whole, more than ``rows`` deliveries, ``cost`` overrun."""
    found = []
    for node in nodes(s.plan):
        table = node.get("Relation Name")
        if table in BIG and node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        if table == "deliveries" and node["Plan Rows"] > rows:
            expects = node["Plan Rows"]
            found.append(f"{node['Node Type']} on deliveries expects {expects:,} rows > {rows:,.0f}")
    if s.plan["Total Cost"] > cost:
        found.append(f"total cost {s.plan['Total Cost']:,.0f} > {cost:,.0f}")
    return [f"{p}: {s.short}" for p in found]


def summary(statements: list[Statement]) -> str:
    """One line per statement: cost, rows, the scans of big tables (for a failure message or ``-s``)."""
    lines = []
    for s in statements:
        used = [
            f"{n['Node Type']}({n.get('Index Name', n.get('Relation Name'))})"
            for n in nodes(s.plan)
            if n.get("Relation Name") in (*BIG, "messages", "claims")
        ]
        lines.append(
            f"cost {s.plan['Total Cost']:>10,.0f} rows {s.plan['Plan Rows']:>8,} {' '.join(used)} | {s.short}"
        )
    return "\n".join(lines)
