"""The public benchmark's database: 1,000 offices in 40 provinces and 100,000 announcements, built fast.

Offices go through the hub's own region loader (``hub.regions.load``: regions, offices, topics and the
seeded office status, as `hub regions load` makes them) from a generated TOML file. Announcements are
copies of one real announcement per office (made by ``announcements.create`` and published, so its
stored data, targets and message are what the hub itself writes), inserted with Core ``executemany``:
100 per office over two years, each with its broadcast message; about two per office are in force now,
the rest have ended. The newest ones fill the feeds; the office page shows those in force.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

ZONES = ("Asia/Jakarta", "Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")
HOURS = '{ monday = "08:00-12:00", tuesday = "08:00-12:00", wednesday = "08:00-12:00", thursday = "08:00-12:00", friday = "08:00-11:00" }'  # noqa: E501


def office_ids(offices: int, provinces: int = 40) -> list[str]:
    per = -(-offices // provinces)
    return [f"kantor-{60 + i // per}-{i % per + 1:02d}" for i in range(offices)]


def regions_toml(offices: int, provinces: int = 40) -> str:
    """``offices`` kota offices spread over ``provinces`` made-up provinces (codes 60..99)."""
    per = -(-offices // provinces)
    lines: list[str] = []
    for p in range(provinces):
        lines += [
            "[[region]]",
            f'code = "{60 + p}"',
            f'name = "Provinsi Contoh {60 + p}"',
            'level = "provinsi"',
            "",
        ]
    for i, office in enumerate(office_ids(offices, provinces)):
        p, n = 60 + i // per, i % per + 1
        lines += [
            "[[region]]",
            f'code = "{p}.{70 + n}"',
            f'name = "Kota Contoh {p}.{70 + n}"',
            'level = "kota"',
            f'parent = "{p}"',
            "",
        ]
        lines += [
            "[[office]]",
            f'id = "{office}"',
            f'name = "Disdukcapil Kota Contoh {p}.{70 + n}"',
            f'region = "{p}.{70 + n}"',
            f'timezone = "{ZONES[i % len(ZONES)]}"',
            'online_app = "Dukcapil Online"',
            "[[office.change]]",
            'date = "2020-03"',
            'kind = "hours_changed"',
            'summary = "Face-to-face service in limited hours with a daily quota; the rest online."',
            "daily_quota = 50",
            f"hours = {HOURS}",
            "[office.contacts]",
            f'"KK dan KTP-el" = "0858-70{i % 100:02d}-{1000 + i % 9000:04d}"',
            f'"akta" = "0857-12{i % 100:02d}-{2000 + i % 7000:04d}"',
            "",
        ]
    return "\n".join(lines)


async def load_offices(hub: Any, workdir: Path, offices: int) -> list[str]:
    from hub.regions import load, read_file

    path = workdir / "offices.toml"
    path.write_text(regions_toml(offices), encoding="utf-8")
    await load(hub, read_file(path))
    return office_ids(offices)


async def load_announcements(hub: Any, offices: list[str], per_office: int) -> dict[str, int]:
    """``per_office`` announcements for each office (copies of a real one), with their messages."""
    from hub import announcements
    from hub.clock import utcnow
    from hub.store.models import Announcement, Message

    model = announcements.AnnouncementInput(
        template="restriction", topics=[offices[0]], data={"period_days": 14}
    )
    real, message = await announcements.create(hub, model, publish=True)
    assert message is not None
    async with hub.db.session() as session:
        a_row = (
            await session.execute(select(Announcement.__table__).where(Announcement.id == real.id))
        ).one()
        m_row = (await session.execute(select(Message.__table__).where(Message.id == message.id))).one()
    a_base = {k: v for k, v in a_row._mapping.items() if k != "id"}
    m_base = {k: v for k, v in m_row._mapping.items() if k != "id"}
    rng = random.Random(11)
    now = utcnow()
    start = now - timedelta(days=730)
    step = timedelta(days=730) / per_office
    in_force = 0
    next_id = real.id + 1
    batch_a: list[dict[str, Any]] = []
    batch_m: list[dict[str, Any]] = []
    async with hub.db.engine.begin() as conn:
        for k in range(per_office):
            for office in offices:
                created = start + step * k + timedelta(seconds=rng.randrange(3600))
                # The two newest of each office are still in force; the others ran for two weeks.
                current = k >= per_office - 2
                until = now + timedelta(days=7 + k % 7) if current else created + timedelta(days=14)
                in_force += current
                targets = dict(a_base["targets"] or {})
                if "topics" in targets:
                    targets["topics"] = [office]
                batch_a.append(
                    {
                        **a_base,
                        "id": next_id,
                        "office_id": office,
                        "targets": targets,
                        "valid_from": created,
                        "valid_until": until,
                        "publish_at": None,
                        "created_at": created,
                        "state": "published",
                    }
                )
                batch_m.append(
                    {
                        **m_base,
                        "announcement_id": next_id,
                        "office_id": office,
                        "send_at": created,
                        "created_at": created,
                        "planned_at": created,
                        "plan_touched_at": created,
                        "state": "planned",
                    }
                )
                next_id += 1
            if len(batch_a) >= 5000 or k == per_office - 1:
                await conn.execute(insert(Announcement.__table__), batch_a)
                await conn.execute(insert(Message.__table__), batch_m)
                batch_a, batch_m = [], []
    return {"announcements": next_id - real.id, "in_force": in_force}
