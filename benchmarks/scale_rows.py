"""The rows of ``benchmarks.scale_data``: one ``INSERT … SELECT`` over ``generate_series`` per table.

Endpoint ``e`` belongs to subscriber ``e`` and follows office topic ``(e - 1) % 27 + 1``; broadcast ``k``
goes to topic ``(k - 1) % 27 + 1``, its ``j``-th delivery to that topic's ``j``-th endpoint, so deliveries,
subscriptions and audiences agree. States follow the module docstring of ``benchmarks.scale_data``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

#: Jawa Barat's kabupaten and kota: one office each, with one general topic.
OFFICES = 27
#: Endpoint ``e``'s channel and address, by ``e % 20``.
CHANNEL = (
    "CASE WHEN {e} % 20 < 10 THEN 'telegram' WHEN {e} % 20 < 16 THEN 'email' "
    "WHEN {e} % 20 < 19 THEN 'sms' ELSE 'matrix' END"
)
ADDRESS = (
    "CASE WHEN e % 20 < 10 THEN (100000000 + e)::text "
    "WHEN e % 20 < 16 THEN 'warga' || e || '@mail.example.com' "
    "WHEN e % 20 < 19 THEN '+6281' || (20000000 + e) ELSE '@warga' || e || '\\:matrix.example.org' END"
)
PROVIDER_ID = (
    "CASE ch WHEN 'email' THEN '<d' || i || '.hub@disdukcapil.example>' WHEN 'telegram' THEN i::text "
    "WHEN 'sms' THEN 'smsc-' || i ELSE '$ev' || i || '\\:matrix.example.org' END"
)


#: Parameters PostgreSQL cannot type from their context (``:rows % :audience``): cast where they appear.
TYPES = {"now": "timestamp", "step": "float8", "ustep": "float8"}


def _sql(statement: str) -> Any:
    """``text()`` with every named parameter cast to its type (``bigint`` unless ``TYPES`` says else)."""
    return text(
        re.sub(
            r"(?<![:\w\\]):(\w+)",
            lambda m: f"CAST(:{m[1]} AS {TYPES.get(m[1], 'bigint')})" if m[1] != "t" else m[0],
            statement,
        )
    )


async def offices(conn: AsyncConnection, p: dict[str, Any]) -> None:
    await conn.execute(
        _sql(
            "INSERT INTO regions (code, name, level, parent_code, path) "
            "VALUES ('32', 'Jawa Barat', 'province', NULL, '32/')"
        )
    )
    await conn.execute(
        _sql(
            "INSERT INTO regions (code, name, level, parent_code, path) "
            "SELECT '32.' || lpad(o::text, 2, '0'), 'Kabupaten ' || o, 'regency', '32', "
            "'32/32.' || lpad(o::text, 2, '0') || '/' FROM generate_series(1, :offices) o"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO offices (id, name, region_code, timezone, profile) "
            "SELECT 'jabar-' || lpad(o::text, 2, '0'), 'Disdukcapil Kabupaten ' || o, "
            "'32.' || lpad(o::text, 2, '0'), 'Asia/Jakarta', '{}'::json FROM generate_series(1, :offices) o"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO topics (id, slug, office_id, service, name) "
            "SELECT o, 'jabar-' || lpad(o::text, 2, '0'), 'jabar-' || lpad(o::text, 2, '0'), NULL, "
            "'Info Disdukcapil Kabupaten ' || o FROM generate_series(1, :offices) o"
        ),
        p,
    )


async def people(conn: AsyncConnection, p: dict[str, Any]) -> None:
    """Endpoint ``e`` belongs to subscriber ``e`` and follows topic ``(e - 1) % 27 + 1`` (97% confirmed)."""
    await conn.execute(
        _sql(
            "INSERT INTO subscribers (id, locale, created_at) SELECT e, "
            "CASE WHEN e % 10 = 0 THEN 'en' ELSE 'id' END, :now - make_interval(days => 400) "
            "FROM generate_series(1, :people) e"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO endpoints (id, subscriber_id, channel, address, kind, relay_office_id, active, "
            "deactivated_reason, created_at, state_changed_at) "
            f"SELECT e, e, {CHANNEL.format(e='e')}, {ADDRESS}, 'person', NULL, e % 50 <> 7, "
            "CASE WHEN e % 50 = 7 THEN 'bot was blocked by the user' END, "
            ":now - make_interval(days => 400), :now - make_interval(days => 400) "
            "FROM generate_series(1, :people) e"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO subscriptions (id, topic_id, endpoint_id, state, created_at, updated_at, "
            "state_changed_at) SELECT e, (e - 1) % :offices + 1, e, "
            "CASE WHEN e % 100 < 97 THEN 'confirmed' WHEN e % 100 < 99 THEN 'pending' "
            "ELSE 'unsubscribed' END, :now - make_interval(days => 400), :now - make_interval(days => 400), "
            ":now - make_interval(days => 400) FROM generate_series(1, :people) e"
        ),
        p,
    )


async def messages(conn: AsyncConnection, p: dict[str, Any]) -> None:
    """Broadcast ``k`` (ids 1..broadcasts) goes to topic ``(k - 1) % 27 + 1``; urgent updates follow."""
    await conn.execute(
        _sql(
            "INSERT INTO messages (id, kind, lane, office_id, state, send_at, plan_cursor, created_at, "
            "planned_at, plan_touched_at) SELECT k, 'announcement', 'bulk', "
            "'jabar-' || lpad(((k - 1) % :offices + 1)::text, 2, '0'), "
            "CASE WHEN k = :broadcasts AND :rows % :audience <> 0 THEN 'planning' ELSE 'planned' END, "
            "s, CASE WHEN k = :broadcasts AND :rows % :audience <> 0 "
            " THEN (k - 1) % :offices + 1 + (:rows % :audience - 1) * :offices ELSE 0 END, s, "
            "CASE WHEN k = :broadcasts AND :rows % :audience <> 0 THEN NULL ELSE s END, s "
            "FROM (SELECT k, :now - make_interval(secs => (:broadcasts - k) * :step) s "
            " FROM generate_series(1, :broadcasts) k) b"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO messages (id, kind, lane, office_id, state, send_at, plan_cursor, created_at, "
            "planned_at, plan_touched_at) SELECT :broadcasts + u, 'applicant', 'urgent', "
            "'jabar-' || lpad((u % :offices + 1)::text, 2, '0'), 'planned', s, 0, s, s, s "
            "FROM (SELECT u, :now - make_interval(secs => (:urgent - u) * :ustep) s "
            " FROM generate_series(1, :urgent) u) a"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO message_topics (message_id, topic_id) "
            "SELECT k, (k - 1) % :offices + 1 FROM generate_series(1, :broadcasts) k"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO message_endpoints (message_id, endpoint_id) "
            "SELECT :broadcasts + u, (u * 7919) % :people + 1 FROM generate_series(1, :urgent) u"
        ),
        p,
    )
    await conn.execute(
        _sql(
            "INSERT INTO renderings (message_id, channel, locale, subject, text, html, buttons) "
            "SELECT m, ch, loc, 'Pengumuman ' || m, repeat('Layanan kantor berubah minggu ini. ', 8), "
            "CASE WHEN ch = 'email' THEN '<p>' || repeat('Layanan kantor berubah minggu ini. ', 8) "
            "|| '</p>' END, '[]'::json FROM generate_series(1, :broadcasts + :urgent) m, "
            "unnest(ARRAY['telegram', 'email', 'sms', 'matrix']) ch, unnest(ARRAY['id', 'en']) loc"
        ),
        p,
    )


async def deliveries_and_claims(conn: AsyncConnection, p: dict[str, Any]) -> None:
    """Row ``i`` of broadcast ``k`` is its ``j``-th subscriber: settled, or draining for the newest ones."""
    # pct: how far through its broadcast's audience a row is (in-progress rows follow it: sent first).
    base = (
        "SELECT i, k, j, e, s, ch, (i * 37) % 100 AS h, j * 100 / :audience AS pct, "
        "k > :broadcasts - :active AS draining FROM (SELECT i, k, j, t + 1 + j * :offices AS e, "
        "s FROM (SELECT i, i / :audience + 1 AS k, i % :audience AS j, "
        "(i / :audience) % :offices AS t, "
        ":now - make_interval(secs => (:broadcasts - i / :audience - 1) * :step) AS s "
        "FROM generate_series(0, :rows - 1) i) a) b, "
        f"LATERAL (SELECT {CHANNEL.format(e='e')} AS ch) c"
    )
    state = (
        "CASE WHEN NOT draining THEN CASE WHEN ch = 'sms' AND h < 70 THEN 'delivered' "
        " WHEN h < 94 THEN 'sent' WHEN h < 97 THEN 'failed' WHEN h < 99 THEN 'gone' ELSE 'skipped' END "
        "WHEN pct < 40 THEN 'sent' WHEN pct < 41 THEN 'sending' WHEN pct < 45 THEN 'retrying' "
        "ELSE 'queued' END"
    )
    await conn.execute(
        _sql(
            "INSERT INTO deliveries (id, message_id, endpoint_id, topic_id, channel, lane, state, attempts, "
            "next_attempt_at, enqueued_at, claim, lease_until, provider_id, error, sent_at, updated_at) "
            "SELECT i + 1, k, e, (k - 1) % :offices + 1, ch, 'bulk', st, "
            "CASE st WHEN 'failed' THEN 3 WHEN 'retrying' THEN 1 + i % 3 WHEN 'queued' THEN 0 "
            " WHEN 'sending' THEN 0 WHEN 'skipped' THEN 0 ELSE 1 END, "
            "CASE st WHEN 'retrying' THEN :now + make_interval(secs => i % 600 - 300) ELSE s END, "
            # A lost enqueue: a few queued rows of the newest broadcast were never put on Redis.
            "CASE WHEN st = 'queued' AND k = :broadcasts AND h = 3 THEN NULL "
            " WHEN st IN ('queued', 'retrying') THEN :now - interval '5 seconds' ELSE s END, "
            "CASE WHEN st IN ('queued', 'skipped') THEN NULL ELSE md5('claim' || (i / 100)) END, NULL, "
            f"CASE WHEN st IN ('sent', 'delivered') THEN {PROVIDER_ID} END, "
            "CASE st WHEN 'failed' THEN 'mailbox full' WHEN 'gone' THEN 'bot was blocked by the user' "
            " WHEN 'skipped' THEN 'endpoint inactive' WHEN 'retrying' THEN 'provider busy (429)' END, "
            "CASE WHEN st IN ('sent', 'delivered') THEN s + make_interval(secs => j / 100.0) END, "
            "CASE WHEN draining THEN :now ELSE s + make_interval(secs => j / 100.0) END "
            f"FROM ({base}) d, LATERAL (SELECT {state} AS st) x"
        ),
        p,
    )
    # Applicant updates: one delivery each, settled but for the newest 20 (queued, due now).
    await conn.execute(
        _sql(
            "INSERT INTO deliveries (id, message_id, endpoint_id, topic_id, channel, lane, state, attempts, "
            "next_attempt_at, enqueued_at, claim, provider_id, sent_at, updated_at) "
            "SELECT :rows + u, :broadcasts + u, e, NULL, ch, 'urgent', st, "
            "CASE WHEN st = 'sent' THEN 1 ELSE 0 END, s, s, "
            "CASE WHEN st = 'sent' THEN md5('urgent' || u) END, "
            f"CASE WHEN st = 'sent' THEN {PROVIDER_ID} END, "
            "CASE WHEN st = 'sent' THEN s END, s FROM (SELECT u, u AS i, (u * 7919) % :people + 1 AS e, "
            ":now - make_interval(secs => (:urgent - u) * :ustep) AS s, "
            "CASE WHEN u > :urgent - 20 THEN 'queued' ELSE 'sent' END AS st "
            "FROM generate_series(1, :urgent) u) a, "
            f"LATERAL (SELECT {CHANNEL.format(e='e')} AS ch) c"
        ),
        p,
    )
    # The claims of the rows in ``sending``: live (renewed for the next ten minutes, as if a worker were
    # sending them), but for one batch in ten (a worker that died).
    await conn.execute(
        _sql(
            "INSERT INTO claims (token, lease_until, requeued, created_at) "
            "SELECT claim, CASE WHEN row_number() OVER (ORDER BY claim) % 10 = 1 "
            " THEN :now - interval '2 minutes' ELSE :now + interval '10 minutes' END, false, "
            ":now - interval '20 seconds' FROM deliveries WHERE state = 'sending' GROUP BY claim"
        ),
        p,
    )
