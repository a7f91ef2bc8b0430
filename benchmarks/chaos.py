"""Chaos soak: for N minutes, broadcasts over email, Telegram, Matrix and SMS drain through `hub worker`
processes while workers are SIGKILLed, Redis is restarted empty, providers answer 429 and 503 in bursts and
smsbox is stopped for a minute; afterwards every sink's copies are counted per recipient and broadcast.

    python -m benchmarks.chaos [--minutes 30] [--messages 100000] [--workers 3] [--database pg]
                               [--seed N] [--json-out PATH]

Peers (all on 127.0.0.1, started here and stopped after): an aiosmtpd sink (benchmarks/chaos_peers.py),
the fake Bot API (tests/fakes/telegram_api.py, paid broadcasts: 1,000/s, 1/s per chat), Synapse
(tests/services/synapse.py) behind a fault proxy (tests/fakes/fault_proxy.py), Kannel with its fake SMSC
(tests/services/kannel.py) with the fault proxy in front of sendsms, and a private redis-server without
persistence. ``--messages`` deliveries in total: half email, 30 % Telegram, 15 % SMS in ``--broadcasts``
broadcasts per channel, 5 % Matrix to ``--matrix-rooms`` rooms in as many broadcasts as that takes
(Synapse makes about 1.5 rooms a second here, so few rooms and many broadcasts). Broadcasts are published
through the first 60 % of the window, so faults meet traffic throughout; after the window the faults stop
and the run drains (``--drain-minutes`` at most), then counts. Pass/fail per channel: 0 lost; Matrix 0
duplicates; elsewhere duplicates at most kills × (urgent_jobs + bulk_jobs) × flush_every (docs/design.md,
"Crashes"); no request inside a provider's retry delay (more than ``--grace`` s after the 429).
Method and figures: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos_count import expected_pairs, failures, matrix_copies, sms_copies, tally, telegram_copies
from benchmarks.chaos_faults import Chaos, Peers
from benchmarks.chaos_peers import PrivateRedis, SmtpSink, Workers, free_port
from benchmarks.common import (
    Result,
    Row,
    bulk_audience,
    cli,
    make_settings,
    overrides,
    parser,
    start_hub,
    store_for,
)

SHARES = {"email": 0.50, "telegram": 0.30, "sms": 0.15, "matrix": 0.05}
TOPICS = {
    "email": "kota-pekalongan",
    "telegram": "kota-serang",
    "sms": "kabupaten-serang",
    "matrix": "kota-sukabumi",
}
ADDRESS_SQL = {
    "email": "'warga' || i || '@mail.example.com'",
    "telegram": "CAST(100000000 + i AS VARCHAR(20))",
    "sms": "'+628123' || CAST(4000000 + i AS VARCHAR(20))",
}
#: A dead worker's claims come back within seconds (lease 15 s, reconciler every 2 s). bulk_jobs 30: with the
#: default 10, jobs of the slowly paced channels held every slot and Matrix starved (docs/reliability.md).
QUEUE = {"lease_seconds": 15, "reconcile_every_seconds": 2, "poll_delay": 0.05, "bulk_jobs": 30}
TEXT = "Layanan KTP-el tetap buka 08.00-11.00 WIB."


def sizes(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """{channel: (recipients, broadcasts)} adding up to about ``--messages`` deliveries."""
    out = {c: (max(1, round(args.messages * SHARES[c] / args.broadcasts)), args.broadcasts) for c in SHARES}
    out["matrix"] = (args.matrix_rooms, max(1, round(args.messages * SHARES["matrix"] / args.matrix_rooms)))
    return out


def paces(args: argparse.Namespace, size: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Each channel's send rate (the hub's pacing): its deliveries spread over 80 % of the window, so the
    faults meet traffic from start to end instead of idle channels between broadcasts."""
    span = args.minutes * 60 * 0.8
    return {c: max(2.0, round(n * r / span, 1)) for c, (n, r) in size.items()}


async def publish(hub: Any, channel: str, n: int) -> int:
    from sqlalchemy import func, select

    from hub import announcements
    from hub.store.models import Message

    async with hub.db.session() as session:
        before = await session.scalar(select(func.coalesce(func.max(Message.id), 0)))
    req = announcements.AnnouncementInput(
        template="free_text",
        topics=[TOPICS[channel]],
        data={"title": f"Chaos-{channel}-{n:03d}", "text": TEXT},
    )
    try:
        _, message = await announcements.create(hub, req, publish=True)
        assert message is not None
        return int(message.id)
    except Exception as exc:  # stored but not queued: the reconciler plans it; adopt the stored message
        async with hub.db.session() as session:
            found = await session.scalar(select(func.max(Message.id)).where(Message.id > before))
        if found is None:
            raise
        print(f"   publish of Chaos-{channel}-{n:03d} raised {type(exc).__name__}; message {found} kept")
        return int(found)


async def counts(hub: Any, ids: list[int]) -> dict[str, dict[str, int]]:
    from sqlalchemy import func, select

    from hub.store.models import Delivery

    out: dict[str, dict[str, int]] = {}
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Delivery.channel, Delivery.state, func.count())
            .where(Delivery.message_id.in_(ids))
            .group_by(Delivery.channel, Delivery.state)
        )
        for channel, state, n in rows:
            out.setdefault(channel, {})[state] = n
    return out


def progress(c: dict[str, dict[str, int]]) -> str:
    parts = []
    for channel in SHARES:
        states = c.get(channel, {})
        done = states.get("sent", 0) + states.get("delivered", 0)
        parts.append(f"{channel} {done:,}/{sum(states.values()):,}")
    return ", ".join(parts)


async def soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tests.fakes.fault_proxy import FaultProxy
    from tests.fakes.telegram_api import FakeTelegram
    from tests.services.kannel import start_kannel
    from tests.services.synapse import Person, run_synapse
    from tests.workers import write_settings

    rng = random.Random(args.seed)
    size = sizes(args)
    rate = paces(args, size)
    # Telegram's own limit is 30/s for a bot; above that, paid broadcasts (1,000/s) as a large office would.
    paid = rate["telegram"] > 29
    telegram = {
        "paid_broadcast": paid,
        "paid_rate_per_second" if paid else "rate_per_second": rate["telegram"],
    }
    async with contextlib.AsyncExitStack() as stack:
        redis = PrivateRedis(tmp).start()
        stack.callback(redis.stop)
        smtp = SmtpSink().start()
        stack.callback(smtp.stop)
        fake = FakeTelegram(overall_per_second=1000 if paid else 30).start()
        stack.callback(fake.stop)
        for i in range(1, size["telegram"][0] + 1):
            fake.add_private(100_000_000 + i)
        kannel = start_kannel(tmp / "kannel", mo_url=f"http://127.0.0.1:{free_port()}/mo")
        stack.callback(kannel.stop)
        sms_proxy = FaultProxy(kannel.sendsms_url, match=r"/cgi-bin/sendsms").start()
        stack.callback(sms_proxy.stop)
        (tmp / "synapse").mkdir()
        synapse = stack.enter_context(run_synapse(tmp / "synapse"))
        bot = synapse.register("dukcapil-chaos")
        synapse.override_ratelimit(bot.user_id, 0, 0)
        owner = Person(synapse, bot)
        print(f"   creating {size['matrix'][0]} Matrix rooms …", flush=True)
        rooms = [await owner.create_room(name=f"Kelurahan {n}") for n in range(size["matrix"][0])]
        await owner.http.aclose()
        matrix_proxy = FaultProxy(synapse.base_url, match=r"/rooms/[^/]+/send/", flavour="matrix").start()
        stack.callback(matrix_proxy.stop)
        store = stack.enter_context(store_for(tmp, args.database))
        channels = {
            "email": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp.port,
                "start_tls": False,
                "sender": "Disdukcapil <no-reply@disdukcapil.example.go.id>",
                "pool_size": 4,
                "allow_test_domains": True,
                "rate_per_second": rate["email"],
            },
            "telegram": {
                "enabled": True,
                "token": fake.token,
                "base_url": fake.base_url,
                "username": fake.bot_username,
                **telegram,
            },
            "matrix": {
                "enabled": True,
                "homeserver": matrix_proxy.url,
                "user_id": bot.user_id,
                "password": bot.password,
                "device_id": "HUBCHAOS",
                "store_path": str(tmp / "matrix-store"),
                "rate_per_second": rate["matrix"],
                "allowed_servers": ["localhost"],
            },
            "sms": {
                "enabled": True,
                "sender": "DUKCAPIL",
                "dlr_secret": "chaos-dlr-secret",
                "concurrency": 16,
                "transliterate": True,
                "gateways": [
                    kannel.gateway_settings(
                        url=sms_proxy.url, rate_per_second=rate["sms"], dlr_mask=0, timeout=10.0
                    )
                ],
            },
        }
        ov = overrides(store.url, channels=channels, **{**QUEUE, **args.queue_extra})
        ov["database"]["schema"] = store.schema or ""
        ov["redis"]["url"] = redis.url
        hub = await start_hub(ov)
        stack.push_async_callback(hub.close)
        for channel in ("email", "telegram", "sms"):
            await bulk_audience(
                hub,
                size[channel][0],
                channel=channel,
                address_sql=ADDRESS_SQL[channel],
                topic=TOPICS[channel],
            )
        from hub import subscriptions

        for room in rooms:
            await subscriptions.subscribe(hub, TOPICS["matrix"], "matrix", room, confirmed=True, kind="group")
        settings = make_settings(ov)
        settings_file = write_settings(settings, tmp / "settings.toml")
        workers = Workers(settings_file, tmp, args.workers)
        workers.start_all()
        stack.callback(workers.stop_all)

        window = args.minutes * 60
        chaos = Chaos(
            Peers(redis, workers, smtp, fake, kannel, sms_proxy, matrix_proxy),
            rng,
            window,
            kill_every=args.kill_every,
            smsbox_every=args.smsbox_every,
            smsbox_down=args.smsbox_down,
        )

        async def ping_redis() -> None:
            for _ in range(100):
                try:
                    await hub.redis.ping()
                    return
                except Exception:
                    await asyncio.sleep(0.1)

        schedule = sorted(
            ((k + 0.5) * window * 0.6 / rounds, channel, k + 1)
            for channel, (_, rounds) in size.items()
            for k in range(rounds)
        )
        markers: dict[int, str] = {}

        async def publisher() -> None:
            for at, channel, n in schedule:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - chaos.started)))
                async with chaos.redis_lock:
                    markers[await publish(hub, channel, n)] = f"Chaos-{channel}-{n:03d}"

        async def reporter() -> None:
            while True:
                await asyncio.sleep(15)
                now = time.monotonic() - chaos.started
                print(f"   … {now:5.0f} s: {progress(await counts(hub, list(markers)))}", flush=True)

        report = asyncio.create_task(reporter())
        print(
            f"   chaos for {args.minutes:g} min: {sum(n * r for n, r in size.values()):,} deliveries …",
            flush=True,
        )
        await asyncio.gather(chaos.run(ping_redis), publisher())
        chaos.calm()
        died = chaos.counts.get("worker exited by itself, restarted", 0) + len(workers.died())
        for slot in range(workers.count):
            if slot not in workers.alive():
                workers.start(slot)
        drain_started = time.monotonic()
        expected_total = sum(n * r for n, r in size.values())
        while True:
            c = await counts(hub, list(markers))
            total = sum(sum(s.values()) for s in c.values())
            pending = sum(s.get(k, 0) for s in c.values() for k in ("queued", "sending", "retrying"))
            if total >= expected_total and pending == 0:
                break
            if time.monotonic() - drain_started > args.drain_minutes * 60:
                print(f"   drain timed out: {progress(c)}")
                break
            await asyncio.sleep(1.0)
        drain = time.monotonic() - drain_started
        report.cancel()
        await asyncio.sleep(3.0)  # the fake SMSC's last lines
        workers.stop_all()
        expected = await expected_pairs(hub, markers)
        why = await failures(hub, list(markers))
        if args.keep:  # worker logs, Kannel's and Synapse's, for a look after a failure
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for log in [
                *tmp.glob("worker-*.log"),
                *(tmp / "kannel").glob("*.log"),
                tmp / "synapse/homeserver.log",
            ]:
                if log.exists():
                    shutil.copy(log, keep / f"{log.parent.name}-{log.name}")
        copies = {
            "email": smtp.copies,
            "telegram": telegram_copies(fake),
            "sms": sms_copies(kannel),
            "matrix": await matrix_copies(synapse.base_url, bot.access_token, rooms),
        }
        tallies = {ch: tally(ch, expected.get(ch, {}), copies[ch]) for ch in SHARES}
        q = settings.queue
        return {
            "size": size,
            "rates": rate,
            "failures": why,
            "tallies": tallies,
            "kills": workers.kills,
            "died_by_themselves": died,
            "redis_restarts": redis.restarts,
            "faults": chaos.counts,
            "log": chaos.log,
            "drain_seconds": drain,
            "per_crash": (q.urgent_jobs + q.bulk_jobs) * q.flush_every,
            "queue": {k: getattr(q, k) for k in ("urgent_jobs", "bulk_jobs", "flush_every", "lease_seconds")},
            "early": {
                "telegram": (len(fake.violations(args.grace)), len(fake.early), fake.too_many_requests),
                "matrix": (
                    len(matrix_proxy.violations(args.grace)),
                    len(matrix_proxy.early),
                    matrix_proxy.injected.get(429, 0),
                ),
                "sms": (
                    len(sms_proxy.violations(args.grace)),
                    len(sms_proxy.early),
                    sms_proxy.injected.get(429, 0),
                ),
            },
            "injected": {
                "telegram_5xx": sum(1 for _, code, _ in fake.errors if code >= 500),
                "matrix": dict(matrix_proxy.injected),
                "matrix_lost_answers": matrix_proxy.lost_answers,
                "sms": dict(sms_proxy.injected),
                "email_421": smtp.refused,
            },
        }


def run(args: argparse.Namespace) -> Result:
    import tempfile

    from benchmarks.common import queue_overrides

    args.queue_extra = queue_overrides(args.queue)
    if args.quick:
        args.minutes, args.messages, args.matrix_rooms, args.broadcasts = 1.0, 2000, 4, 3
    with tempfile.TemporaryDirectory(prefix="hub-chaos-") as tmp:
        out = asyncio.run(soak(args, Path(tmp)))
    return result(args, out)


def result(args: argparse.Namespace, out: dict[str, Any]) -> Result:
    bound = out["kills"] * out["per_crash"]
    tallies = out["tallies"]
    res = Result(
        name="chaos",
        title=f"Chaos soak: {args.minutes:g} min of worker kills, Redis restarts, 429/503, smsbox down",
        params={
            "minutes": args.minutes,
            "deliveries": sum(t.expected for t in tallies.values()),
            "recipients_x_broadcasts": {c: f"{n} x {r}" for c, (n, r) in out["size"].items()},
            "worker_processes": args.workers,
            "seed": args.seed,
            "kills": out["kills"],
            "redis_restarts": out["redis_restarts"],
            "workers_exited_by_themselves": out["died_by_themselves"],
            "faults": out["faults"],
            "injected": out["injected"],
            "answered_429": {provider: e[2] for provider, e in out["early"].items()},
            "queue": out["queue"],
            "rates_per_second": out["rates"],
            "drain_seconds": round(out["drain_seconds"], 1),
            "states": {c: t.states for c, t in tallies.items()},
            "not_sent": out["failures"],
        },
    )
    pending = sum(t.pending for t in tallies.values())
    res.rows.append(
        Row(
            metric=f"undelivered when the drain ended ({out['drain_seconds']:.0f} s after the window)",
            value=pending,
            unit="deliveries",
            aim="= 0 (drained)",
            met=pending == 0,
        )
    )
    for channel, t in tallies.items():
        res.rows.append(
            Row(
                metric=f"{channel}: lost (of {t.expected:,})",
                value=t.lost,
                unit="deliveries",
                aim="= 0",
                met=t.lost == 0,
            )
        )
        if channel == "matrix":
            res.rows.append(
                Row(
                    metric="matrix: duplicates",
                    value=t.duplicates,
                    unit="copies",
                    aim="= 0",
                    met=t.duplicates == 0,
                )
            )
        else:
            res.rows.append(
                Row(
                    metric=f"{channel}: duplicates",
                    value=t.duplicates,
                    unit="copies",
                    ceiling=bound,
                    ceiling_what=f"crash bound: {out['kills']} kills x {out['per_crash']}",
                    ratio=t.duplicates / bound if bound else None,
                    aim="<= crash bound",
                    met=t.duplicates <= bound,
                )
            )
    dup_total = sum(t.duplicates for c, t in tallies.items() if c != "matrix")
    res.rows.append(
        Row(
            metric="email+telegram+sms: duplicates together",
            value=dup_total,
            unit="copies",
            ceiling=bound,
            ceiling_what="the same bound, all channels of a crashed worker together",
            aim="<= crash bound",
            met=dup_total <= bound,
        )
    )
    for provider, (late, raw, answered) in out["early"].items():
        res.rows.append(
            Row(
                metric=f"{provider}: requests inside a retry-after (> {args.grace:g} s after the 429)",
                value=late,
                unit="requests",
                aim="= 0",
                met=late == 0,
            )
        )
        res.notes.append(
            f"{provider}: {answered} x 429 answered; {raw} requests arrived inside a hold at all"
        )
    for channel, t in tallies.items():
        if t.lost_examples or t.duplicate_examples or t.unexpected:
            seen = f"lost {t.lost_examples} duplicates {t.duplicate_examples} unexpected {t.unexpected}"
            res.notes.append(f"{channel}: {seen}")
    if out["died_by_themselves"]:
        n = out["died_by_themselves"]
        res.notes.append(f"workers that exited by themselves (restarted, as a supervisor would): {n}")
    res.notes.append(
        "faults: " + "; ".join(f"{at:.0f}s {what} {detail}".strip() for at, what, detail in out["log"])
    )
    return res


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30, help="the chaos window (the drain comes after)")
    p.add_argument("--messages", type=int, default=100_000, help="deliveries in total over the four channels")
    p.add_argument("--broadcasts", type=int, default=10, help="broadcasts per channel (not Matrix)")
    p.add_argument(
        "--matrix-rooms", type=int, default=25, help="Matrix rooms (each gets every Matrix broadcast)"
    )
    p.add_argument("--workers", type=int, default=3, help="hub worker processes")
    p.add_argument("--kill-every", type=float, default=30, help="seconds between worker kills (± 50 %%)")
    p.add_argument("--smsbox-every", type=float, default=600, help="seconds between smsbox stops")
    p.add_argument("--smsbox-down", type=float, default=60, help="seconds smsbox stays stopped")
    p.add_argument("--drain-minutes", type=float, default=15, help="give up draining after this long")
    p.add_argument("--grace", type=float, default=0.5, help="requests already under way when a 429 went out")
    p.add_argument("--seed", type=int, default=12, help="the fault schedule's random seed")
    p.add_argument("--keep", metavar="DIR", help="copy the workers', Kannel's and Synapse's logs here")
    return p


def main(argv: list[str] | None = None) -> Result:
    res = cli(run, build_parser, argv)
    if not all(row.met for row in res.rows if row.met is not None):
        raise SystemExit(1)
    return res


if __name__ == "__main__":
    main()
