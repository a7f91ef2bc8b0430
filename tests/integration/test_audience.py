"""Audience counts kept by the reconciler (hub.audience): right after every kind of change, counted once on
a fresh hub, recounted only when due and changed; the two-person rule still counts for real."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select, update

from hub import announcements, approvals, audience, citizens, subscriptions
from hub.clock import utcnow
from hub.delivery.reconcile import reconcile
from hub.regions import offices_under
from hub.store.models import AudienceCount, Endpoint, Office, Region, Subscriber, Subscription, Topic

SUBSCRIBED = [  # (topic, address, confirmed, locale)
    ("kota-serang", "a@mail.example.com", True, "id"),
    ("kota-serang", "b@mail.example.com", True, "en"),
    ("kabupaten-serang", "b@mail.example.com", True, "en"),  # the same endpoint in two offices
    ("kota-serang/kk", "c@mail.example.com", True, "id"),
    ("kota-serang", "d@mail.example.com", False, "id"),
    ("kota-pekalongan", "e@mail.example.com", True, "id"),
]


async def _subscribe_all(hub) -> None:
    for slug, address, confirmed, locale in SUBSCRIBED:
        await subscriptions.subscribe(
            hub, slug, "email", address, confirmed=confirmed, locale=locale, send_confirmation=False
        )


async def _stored(hub) -> list[tuple[str, str, str, str, int]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(
                AudienceCount.scope,
                AudienceCount.scope_id,
                AudienceCount.channel,
                AudienceCount.locale,
                AudienceCount.count,
            ).where(AudienceCount.scope != "hub")
        )
        return sorted(tuple(r) for r in rows.all())


async def _live(hub) -> list[tuple[str, str, str, str, int]]:
    """Every scope counted the way the planner counts a send (``announcements.audience_counts``)."""
    async with hub.db.session() as session:
        topics = (await session.execute(select(Topic.id, Topic.slug, Topic.office_id))).all()
        regions = {
            code: await offices_under(session, code) for code in ("36", "36.73", "36.04", "33", "33.75")
        }
    scopes: list[tuple[str, str, list[int]]] = [("topic", slug, [tid]) for tid, slug, _ in topics]
    for office in {o for _, _, o in topics}:
        scopes.append(("office", office, [tid for tid, _, o in topics if o == office]))
    for code, under in regions.items():
        scopes.append(("region", code, [tid for tid, _, o in topics if o in under]))
    out = []
    for scope, scope_id, ids in scopes:
        for (channel, locale), n in (await announcements.audience_counts(hub, ids)).items():
            out.append((scope, scope_id, channel, locale, n))
    return sorted(out)


async def _age(hub, seconds: int) -> None:
    """The stored counts made ``seconds`` ago, and the hub-wide gate of the interval gone with the time."""
    async with hub.db.transaction() as session:
        await session.execute(update(AudienceCount).values(counted_at=utcnow() - timedelta(seconds=seconds)))
    await hub.redis.delete(f"{hub.settings.redis.key_prefix}:audience:due")


async def test_counts_match_a_live_count_after_subscribe_confirm_unsubscribe_erase(hub):
    await _subscribe_all(hub)
    assert await audience.counted_at(hub) is None
    await reconcile({"hub": hub})  # a fresh hub: counted at the first pass
    assert await _stored(hub) == [
        ("office", "kabupaten-serang", "email", "en", 1),
        ("office", "kota-pekalongan", "email", "id", 1),
        ("office", "kota-serang", "email", "en", 1),
        ("office", "kota-serang", "email", "id", 2),
        ("region", "33", "email", "id", 1),
        ("region", "33.75", "email", "id", 1),
        ("region", "36", "email", "en", 1),  # b once, though in two offices
        ("region", "36", "email", "id", 2),
        ("region", "36.04", "email", "en", 1),
        ("region", "36.73", "email", "en", 1),
        ("region", "36.73", "email", "id", 2),
        ("topic", "kabupaten-serang", "email", "en", 1),
        ("topic", "kota-pekalongan", "email", "id", 1),
        ("topic", "kota-serang", "email", "en", 1),
        ("topic", "kota-serang", "email", "id", 1),
        ("topic", "kota-serang/kk", "email", "id", 1),
    ]
    assert await _stored(hub) == await _live(hub)

    # Confirm d, b leaves Kota Serang, c is erased, a new address subscribes.
    await subscriptions.subscribe(hub, "kota-serang", "email", "d@mail.example.com", confirmed=True)
    await subscriptions.unsubscribe(hub, "email", "b@mail.example.com", "kota-serang")
    await citizens.erase(hub, "c@mail.example.com", "email", actor="test")
    await subscriptions.subscribe(
        hub, "kabupaten-serang", "email", "f@mail.example.com", confirmed=True, locale="id"
    )
    before = await _stored(hub)
    await reconcile({"hub": hub})  # within the interval: nothing recounted
    assert await _stored(hub) == before != await _live(hub)
    await _age(hub, 61)
    await reconcile({"hub": hub})
    assert await _stored(hub) == await _live(hub)
    assert ("region", "36", "email", "id", 3) in await _stored(hub)  # a, d, f
    assert ("region", "36", "email", "en", 1) in await _stored(hub)  # b, still in Kabupaten Serang


async def test_no_recount_when_nothing_changed(hub):
    await _subscribe_all(hub)
    await audience.refresh(hub)
    await _age(hub, 61)
    assert await audience.refresh_if_due(hub)  # no fingerprint remembered yet: counted
    await _age(hub, 61)
    aged = await audience.counted_at(hub)
    assert not await audience.refresh_if_due(hub)  # due, but nothing changed
    assert not await audience.refresh_if_due(hub)  # and no second look within the interval
    assert await audience.counted_at(hub) == aged
    await subscriptions.subscribe(hub, "kota-serang", "email", "g@mail.example.com", confirmed=True)
    await hub.redis.delete(f"{hub.settings.redis.key_prefix}:audience:due")
    assert await audience.refresh_if_due(hub)  # changed: counted
    assert await audience.counted_at(hub) > aged


async def test_a_fresh_hub_counts_once_then_reads(hub, monkeypatch):
    await _subscribe_all(hub)
    calls = []
    real = audience.count_all

    async def counting(session):
        calls.append(1)
        return await real(session)

    monkeypatch.setattr(audience, "count_all", counting)
    counts, _ = await audience.topic_counts(hub, {"kota-serang"})
    again, _ = await audience.topic_counts(hub, {"kota-serang"})
    assert counts == again == {"kota-serang": {"email": 2}, "kota-serang/kk": {"email": 1}}
    assert len(calls) == 1


async def test_the_approval_rule_counts_for_real_when_the_stored_count_is_stale(hub):
    hub.settings.console.approval_recipients = 4  # the stored 3 would pass, the true 5 does not
    await _subscribe_all(hub)
    await audience.refresh(hub)
    for i in range(2):  # now 4 in Kota Serang; the stored count still says 2 + 1
        await subscriptions.subscribe(hub, "kota-serang", "email", f"n{i}@mail.example.com", confirmed=True)
    _, topic_ids = await announcements.resolve_topics(hub, ["kota-serang"], [], [])
    stale = await audience.estimate(hub, [], topic_ids)
    assert (stale.exact, sum(stale.counts.values())) == (True, 3)
    rule = await approvals.rule_for_targets(hub, "kota-serang", ["kota-serang"], [], [])
    assert (rule.recipients, rule.needed) == (5, True)


async def test_a_province_of_600_offices_is_counted_in_one_pass(hub):
    """More offices than SQLite's 500 terms of a compound SELECT (one per office once broke every count)."""
    n = 600
    regions = [{"code": "99", "name": "Uji", "level": "provinsi", "parent_code": None, "path": "99/"}]
    regions += [
        {
            "code": f"99.{i:03}",
            "name": f"Kota {i}",
            "level": "kota",
            "parent_code": "99",
            "path": f"99/99.{i:03}/",
        }
        for i in range(n)
    ]
    offices = [
        {"id": f"uji-{i:03}", "name": f"Disdukcapil {i}", "region_code": f"99.{i:03}"} for i in range(n)
    ]
    topics = [
        {"id": 10_000 + i, "slug": f"uji-{i:03}", "office_id": f"uji-{i:03}", "name": "Umum"}
        for i in range(n)
    ]
    # Endpoint i follows office i ("id"); endpoint n ("en") follows offices 0 and 1: once in the province.
    people = [{"id": 10_000 + i, "locale": "en" if i == n else "id"} for i in range(n + 1)]
    endpoints = [
        {
            "id": 10_000 + i,
            "subscriber_id": 10_000 + i,
            "channel": "email",
            "address": f"u{i}@mail.example.com",
        }
        for i in range(n + 1)
    ]
    follows = [(i, i) for i in range(n)] + [(n, 0), (n, 1)]
    subs = [
        {"id": 10_000 + k, "topic_id": 10_000 + t, "endpoint_id": 10_000 + e, "state": "confirmed"}
        for k, (e, t) in enumerate(follows)
    ]
    async with hub.db.transaction() as session:
        for model, rows in (
            (Region, regions),
            (Office, offices),
            (Topic, topics),
            (Subscriber, people),
            (Endpoint, endpoints),
            (Subscription, subs),
        ):
            await session.execute(insert(model), rows)
    assert await audience.refresh_if_due(hub)
    stored = await _stored(hub)
    for row in [
        ("region", "99", "email", "id", n),
        ("region", "99", "email", "en", 1),
        ("region", "99.000", "email", "en", 1),
        ("region", "99.599", "email", "id", 1),
        ("office", "uji-001", "email", "en", 1),
        ("office", "uji-001", "email", "id", 1),
        ("topic", "uji-599", "email", "id", 1),
    ]:
        assert row in stored
    assert [r for r in stored if r[1] in ("99", "99.002", "uji-002")] == [
        ("office", "uji-002", "email", "id", 1),
        ("region", "99", "email", "en", 1),
        ("region", "99", "email", "id", n),
        ("region", "99.002", "email", "id", 1),
        ("topic", "uji-002", "email", "id", 1),
    ]
    assert len([r for r in stored if r[0] == "region" and r[1].startswith("99.")]) == n + 2
