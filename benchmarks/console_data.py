"""The console benchmark's database: 1,000,000 subscribers and 10,000 announcements, loaded set-based.

Subscribers, endpoints and subscriptions are three ``INSERT … SELECT`` statements over a counter
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite) joined to a small bucket table that spreads
them over the seed offices with a skew (most in two kota); announcements, messages, kept delivery counts
and the audit log are Core ``executemany`` inserts; the newest messages hold delivery rows (one
``INSERT … SELECT`` each from their audience), the older ones only counts, as after retention.
"""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import Boolean, DateTime, bindparam, insert, select, text

from benchmarks.common import ROOT

#: Share of subscribers (and of announcements) per seed office, in percent: most in a few kota.
WEIGHTS = {
    "kota-serang": 40,
    "kota-pekalongan": 25,
    "kabupaten-serang": 15,
    "kota-sukabumi": 12,
    "banten-provinsi": 8,
}
#: Channel by ``i % 20``: half Telegram, 30% email, 15% SMS, 5% Matrix (disabled: counted nowhere).
CHANNEL_SQL = (
    "CASE WHEN i % 20 < 10 THEN 'telegram' WHEN i % 20 < 16 THEN 'email' "
    "WHEN i % 20 < 19 THEN 'sms' ELSE 'matrix' END"
)
ADDRESS_SQL = (
    "CASE WHEN i % 20 < 10 THEN CAST(100000000 + i AS TEXT) "
    "WHEN i % 20 < 16 THEN 'warga' || CAST(i AS TEXT) || '@mail.example.com' "
    "WHEN i % 20 < 19 THEN '+6281' || CAST(20000000 + i AS TEXT) "
    "ELSE '@warga' || CAST(i AS TEXT) || '\\:matrix.example.org' END"
)
#: Delivery states of held rows by ``endpoint_id % 100`` (a sending message keeps some queued).
DONE_STATE_SQL = (
    "CASE WHEN e.id % 100 < 82 THEN 'delivered' WHEN e.id % 100 < 92 THEN 'sent' "
    "WHEN e.id % 100 < 97 THEN 'failed' ELSE 'gone' END"
)
SENDING_STATE_SQL = (
    "CASE WHEN e.id % 100 < 40 THEN 'delivered' WHEN e.id % 100 < 50 THEN 'sent' "
    "WHEN e.id % 100 < 52 THEN 'failed' WHEN e.id % 100 < 55 THEN 'retrying' ELSE 'queued' END"
)
BIG_OFFICE = "kota-serang"
REASONS = ("mailbox full", "bot was blocked by the user", "number not active", "timeout")


def schema_key() -> str:
    """A short hash of the migrations: a cached database is rebuilt when the schema changes."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "hub" / "store" / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def _counter(dialect: str) -> str:
    if dialect == "postgresql":
        return "WITH n(i) AS (SELECT generate_series(1, :count)) "
    return "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "


def _spread(weights: dict[str, int], slots: int, rng: random.Random) -> list[str]:
    """``slots`` office ids in the proportions of ``weights``, shuffled."""
    total = sum(weights.values())
    out: list[str] = []
    for office, weight in weights.items():
        out += [office] * round(slots * weight / total)
    out = (out + [next(iter(weights))] * slots)[:slots]
    rng.shuffle(out)
    return out


async def load_people(hub: Any, count: int) -> dict[str, Any]:
    """Subscribers with one endpoint each, a subscription to their office's general topic (95% confirmed)
    and, for 30%, one more to a service topic of the same office."""
    from hub.clock import utcnow
    from hub.store.models import Topic

    rng = random.Random(10)
    dialect = hub.db.dialect
    counter = _counter(dialect)
    stamp = bindparam("now", utcnow(), type_=DateTime)
    async with hub.db.engine.begin() as conn:
        topics = (await conn.execute(select(Topic.id, Topic.office_id, Topic.service))).all()
        general = {office: tid for tid, office, service in topics if service is None}
        services: dict[str, list[int]] = {}
        for tid, office, service in topics:
            if service is not None:
                services.setdefault(office, []).append(tid)
        offices = _spread(WEIGHTS, 1000, rng)
        await conn.execute(text("CREATE TABLE bench_map (bucket INTEGER PRIMARY KEY, topic_id INTEGER)"))
        await conn.execute(text("CREATE TABLE bench_smap (k INTEGER PRIMARY KEY, topic_id INTEGER)"))
        await conn.execute(
            text("INSERT INTO bench_map VALUES (:b, :t)"),
            [{"b": b, "t": general[office]} for b, office in enumerate(offices)],
        )
        await conn.execute(
            text("INSERT INTO bench_smap VALUES (:k, :t)"),
            [
                {"k": b * 8 + j, "t": services[office][j % len(services[office])]}
                for b, office in enumerate(offices)
                for j in range(8)
            ],
        )
        await conn.execute(
            text(
                counter + "INSERT INTO subscribers (id, locale, created_at) "
                "SELECT i, CASE WHEN i % 25 = 0 THEN 'en' ELSE 'id' END, :now FROM n"
            ).bindparams(stamp),
            {"count": count},
        )
        await conn.execute(
            text(
                counter + "INSERT INTO endpoints (id, subscriber_id, channel, address, kind, active, "
                "deactivated_reason, created_at) "
                f"SELECT i, i, {CHANNEL_SQL}, {ADDRESS_SQL}, 'person', "
                "CASE WHEN i % 50 = 7 THEN :off ELSE :on END, "
                "CASE WHEN i % 50 = 7 THEN 'bounced' END, :now FROM n"
            ).bindparams(stamp, bindparam("on", True, type_=Boolean), bindparam("off", False, type_=Boolean)),
            {"count": count},
        )
        await conn.execute(
            text(
                counter
                + "INSERT INTO subscriptions (id, topic_id, endpoint_id, state, created_at, updated_at) "
                "SELECT i, m.topic_id, i, CASE WHEN i % 100 < 95 THEN 'confirmed' "
                "WHEN i % 100 < 98 THEN 'pending' ELSE 'unsubscribed' END, :now, :now "
                "FROM n JOIN bench_map m ON m.bucket = (i * 37) % 1000"
            ).bindparams(stamp),
            {"count": count},
        )
        await conn.execute(
            text(
                counter
                + "INSERT INTO subscriptions (id, topic_id, endpoint_id, state, created_at, updated_at) "
                "SELECT :count + i, m.topic_id, i, 'confirmed', :now, :now "
                "FROM n JOIN bench_smap m ON m.k = ((i * 37) % 1000) * 8 + (i / 10) % 8 WHERE i % 10 < 3"
            ).bindparams(stamp),
            {"count": count},
        )
        await conn.execute(text("DROP TABLE bench_map"))
        await conn.execute(text("DROP TABLE bench_smap"))
    await analyze(hub)
    return {"general": general}


async def analyze(hub: Any) -> None:
    """PostgreSQL: table statistics, as autovacuum takes them soon after a bulk load (without them the
    planner takes the new tables for empty and joins a million rows by nested loops)."""
    if hub.db.dialect != "postgresql":
        return
    async with hub.db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))


async def load_announcements(hub: Any, count: int, general: dict[str, int], held: int = 30) -> dict[str, Any]:
    """``count`` announcements over two years, newest last: drafts, awaiting approval, scheduled,
    cancelled, published (sending for the newest five). Returns the ids the benchmark opens."""
    from hub.clock import utcnow
    from hub.store.models import Announcement, AuditEntry, DeliveryCount, Message, MessageTopic, Topic

    rng = random.Random(11)
    now = utcnow()
    start = now - timedelta(days=730)
    step = timedelta(days=730) / count
    offices = _spread(WEIGHTS, count, rng)
    async with hub.db.engine.begin() as conn:
        slugs = dict((await conn.execute(select(Topic.id, Topic.slug))).all())
        sizes = {  # confirmed, active audience of each general topic (for plausible kept counts)
            tid: n
            for tid, n in (
                await conn.execute(
                    text(
                        "SELECT s.topic_id, COUNT(*) FROM subscriptions s JOIN endpoints e ON e.id = "
                        "s.endpoint_id WHERE s.state = 'confirmed' AND e.active GROUP BY s.topic_id"
                    )
                )
            ).all()
        }
    anns, messages, links, kept = [], [], [], []
    recent: list[int] = []
    for k in range(1, count + 1):
        office = offices[k - 1]
        created = start + step * k
        newest = k > count - 200
        if (newest and k % 10 == 0) or k % 97 == 0:
            state = "draft"
        elif newest and k % 10 == 1:
            state = "awaiting_approval"
        elif newest and k % 10 == 2:
            state = "scheduled"
        elif k % 50 == 3:
            state = "cancelled"
        else:
            state = "published"
        topic = general[office]
        anns.append(
            {
                "id": k,
                "office_id": office,
                "template": "free_text",
                "data": {
                    "title": f"Pengumuman layanan nomor {k}",
                    "text": "Pelayanan tatap muka ditutup sementara; pengajuan KTP-el dan KK secara daring.",
                },
                "services": [],
                "targets": {"topics": [slugs[topic]], "regions": []},
                "state": state,
                "publish_at": now + timedelta(days=2) if state == "scheduled" else None,
                "created_at": created,
                "submitted_at": created if state == "awaiting_approval" else None,
            }
        )
        if state in ("draft", "awaiting_approval"):
            continue
        message_state = {"scheduled": "scheduled", "cancelled": "cancelled"}.get(state, "planned")
        send_at = now + timedelta(days=2) if state == "scheduled" else created + timedelta(minutes=10)
        messages.append(
            {
                "id": k,
                "kind": "announcement",
                "lane": "bulk",
                "office_id": office,
                "announcement_id": k,
                "state": message_state,
                "send_at": send_at,
                "plan_cursor": 0,
                "created_at": created,
                "planned_at": send_at if message_state == "planned" else None,
            }
        )
        links.append({"message_id": k, "topic_id": topic})
        if message_state == "planned":
            recent.append(k)
    #: The detail page opens the newest one of the biggest office (in the benchmark admin's subtree).
    big = max(m["id"] for m in messages if m["state"] == "planned" and m["office_id"] == BIG_OFFICE)
    held_ids = set(recent[-held:]) | {big}
    for message in messages:
        if message["state"] != "planned" or message["id"] in held_ids:
            continue
        audience = sizes.get(general[message["office_id"]], 0)
        for channel, share in (("telegram", 0.5), ("email", 0.3), ("sms", 0.15)):
            for state, part in (("delivered", 0.9), ("failed", 0.06), ("gone", 0.04)):
                kept.append(
                    {
                        "message_id": message["id"],
                        "channel": channel,
                        "state": state,
                        "count": int(audience * share * part),
                    }
                )
    actions = (
        "signin",
        "announcement.draft",
        "announcement.submit",
        "announcement.approve",
        "announcement.publish",
    )
    audit = [
        {
            "at": start + step * (k // 5),
            "staff_id": 1 + k % 40,
            "staff_email": f"staf{k % 40}@disdukcapil.example.go.id",
            "office_id": offices[(k // 5) % count],
            "action": actions[k % 5],
            "target": f"announcement:{1 + k // 5}",
            "detail": {},
        }
        for k in range(count * 5)
    ]
    async with hub.db.engine.begin() as conn:
        for table, rows in (
            (Announcement, anns),
            (Message, messages),
            (MessageTopic, links),
            (DeliveryCount, kept),
            (AuditEntry, audit),
        ):
            for i in range(0, len(rows), 5000):
                await conn.execute(insert(table.__table__), rows[i : i + 5000])
    sending = sorted(held_ids - {big})[-5:]
    await analyze(hub)
    held_rows = 0
    async with hub.db.engine.begin() as conn:
        for message_id in sorted(held_ids):
            office = next(m["office_id"] for m in messages if m["id"] == message_id)
            limit = 10_000_000 if message_id == big else (5_000 if message_id in sending else 20_000)
            states = SENDING_STATE_SQL if message_id in sending else DONE_STATE_SQL
            result = await conn.execute(
                text(
                    "INSERT INTO deliveries (message_id, endpoint_id, topic_id, channel, lane, state, "
                    "attempts, next_attempt_at, enqueued_at, error, sent_at, updated_at) "
                    f"SELECT :m, e.id, s.topic_id, e.channel, 'bulk', {states}, 1, :at, :at, "
                    "CASE WHEN e.id % 100 >= 92 AND e.id % 100 < 97 THEN "
                    "CASE WHEN e.id % 4 = 0 THEN :r0 WHEN e.id % 4 = 1 THEN :r1 WHEN e.id % 4 = 2 THEN :r2 "
                    "ELSE :r3 END END, :at, :at "
                    "FROM subscriptions s JOIN endpoints e ON e.id = s.endpoint_id "
                    "WHERE s.topic_id = :t AND s.state = 'confirmed' AND e.active ORDER BY e.id LIMIT :lim"
                ).bindparams(bindparam("at", now - timedelta(hours=1), type_=DateTime)),
                {
                    "m": message_id,
                    "t": general[office],
                    "lim": limit,
                    **{f"r{i}": reason for i, reason in enumerate(REASONS)},
                },
            )
            held_rows += result.rowcount or 0
    old = next(
        m["id"]
        for m in messages
        if m["state"] == "planned" and m["id"] not in held_ids and m["office_id"] == BIG_OFFICE
    )
    return {
        "big": big,
        "old": old,
        "sending": sending,
        "held_messages": len(held_ids),
        "held_rows": held_rows,
        "kept_rows": len(kept),
        "audit_rows": len(audit),
        "messages": len(messages),
        "states": {s: sum(1 for a in anns if a["state"] == s) for s in {a["state"] for a in anns}},
    }
