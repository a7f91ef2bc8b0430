"""After the chaos: who should have got what (the database's deliveries), and how many copies each sink
holds per recipient and broadcast. Lost = a delivery with no copy; duplicates = copies beyond the first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from benchmarks.chaos_peers import marker_of


@dataclass
class Tally:
    """One channel's count: expected (recipient, marker) pairs against the copies a sink holds."""

    channel: str
    expected: int = 0
    received: int = 0  # distinct expected pairs with at least one copy
    lost: int = 0  # no copy, though the row is final (sent, failed, gone, skipped)
    pending: int = 0  # no copy and the row still queued, sending or retrying when the drain ended
    duplicates: int = 0  # copies beyond the first, summed
    most_copies: int = 0
    unexpected: int = 0  # copies of pairs nobody asked for (a wrong address or marker)
    states: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    duplicate_examples: list[str] = field(default_factory=list)


def digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def key_of(channel: str, address: str) -> str:
    """The recipient as the sink sees it: mailbox lower-cased, numbers and chat ids as digits."""
    if channel == "email":
        return address.strip().lower()
    if channel in ("sms", "telegram"):
        return digits(address)
    return address


async def failures(hub: Any, ids: list[int]) -> dict[str, dict[str, int]]:
    """{channel: {error: deliveries}} of the run's deliveries that did not end sent (the why of a loss)."""
    from sqlalchemy import func, select

    from hub.store.models import Delivery

    out: dict[str, dict[str, int]] = {}
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Delivery.channel, Delivery.state, Delivery.error, func.count())
            .where(Delivery.message_id.in_(ids), Delivery.state.not_in(("sent", "delivered")))
            .group_by(Delivery.channel, Delivery.state, Delivery.error)
        )
        for channel, state, error, n in rows:
            out.setdefault(channel, {})[f"{state}: {(error or '')[:160]}"] = n
    return out


async def expected_pairs(hub: Any, markers: dict[int, str]) -> dict[str, dict[tuple[str, str], str]]:
    """{channel: {(recipient, marker): delivery state}} for the run's messages, from the database."""
    from sqlalchemy import select

    from hub.store.models import Delivery, Endpoint

    out: dict[str, dict[tuple[str, str], str]] = {}
    ids = list(markers)
    async with hub.db.session() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = await session.execute(
                select(Delivery.message_id, Delivery.channel, Delivery.state, Endpoint.address)
                .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
                .where(Delivery.message_id.in_(chunk))
            )
            for message_id, channel, state, address in rows:
                out.setdefault(channel, {})[(key_of(channel, address), markers[message_id])] = state
    return out


def tally(channel: str, expected: dict[tuple[str, str], str], copies: Counter[tuple[str, str]]) -> Tally:
    t = Tally(channel, expected=len(expected))
    t.states = dict(Counter(expected.values()))
    for pair in expected:
        n = copies.get(pair, 0)
        if n == 0 and expected[pair] in ("queued", "sending", "retrying"):
            t.pending += 1
            continue
        if n == 0:
            t.lost += 1
            if len(t.lost_examples) < 5:
                t.lost_examples.append(f"{pair[1]} to …{pair[0][-4:]}")
            continue
        t.received += 1
        t.duplicates += n - 1
        t.most_copies = max(t.most_copies, n)
        if n > 1 and len(t.duplicate_examples) < 5:
            t.duplicate_examples.append(f"{pair[1]} to …{pair[0][-4:]}: {n} copies")
    t.unexpected = sum(n for pair, n in copies.items() if pair not in expected)
    return t


# ---------------------------------------------------------------------------------------------------------
# Copies at each sink


def telegram_copies(fake: Any) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for m in fake.messages():
        marker = marker_of(m.text)
        if marker:
            out[(digits(str(m.chat_id)), marker)] += 1
    return out


def sms_copies(kannel: Any) -> Counter[tuple[str, str]]:
    """One copy per message the fake SMSC got carrying a marker (a long SMS's first part carries it)."""
    out: Counter[tuple[str, str]] = Counter()
    for m in kannel.received():
        data = m.data
        text = (
            data.decode("utf-16-be", "replace")
            if m.kind != "text" and b"\x00" in data
            else data.decode("utf-8", "replace")
        )
        marker = marker_of(text)
        if marker:
            out[(digits(m.receiver), marker)] += 1
    return out


async def matrix_copies(base_url: str, token: str, rooms: list[str]) -> Counter[tuple[str, str]]:
    """Every m.room.message in each room's timeline, read from Synapse directly (not through the proxy)."""
    import httpx

    out: Counter[tuple[str, str]] = Counter()
    async with httpx.AsyncClient(
        base_url=f"{base_url}/_matrix/client/v3", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for room in rooms:
            since: str | None = None
            while True:
                url = f"/rooms/{quote(room)}/messages?dir=f&limit=500"
                if since:
                    url += f"&from={quote(since)}"
                data = (await http.get(url)).raise_for_status().json()
                for event in data.get("chunk", []):
                    if event.get("type") != "m.room.message":
                        continue
                    marker = marker_of(str(event.get("content", {}).get("body", "")))
                    if marker:
                        out[(room, marker)] += 1
                end = data.get("end")
                if not data.get("chunk") or not end or end == since:
                    break
                since = end
    return out
