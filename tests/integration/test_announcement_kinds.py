# ruff: noqa: E501  (old and new announcement data read better unwrapped)
"""Migration 0002 moves announcements written before issue 8 into the kinds offices need (defect 8)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from hub import kinds
from hub.store.db import MIGRATIONS, Database

OLD = [
    ("closure", {"mode": "restricted", "period_days": 14, "online_app": "Smartdukcapil",
                 "exceptions": ["pengambilan dokumen", "pendaftaran BPJS"]}),
    ("closure", {"mode": "closed", "reason": "COVID-19", "exceptions": ["legalisir"]}),
    ("free_text", {"title": "Libur", "text": "Kantor tutup.", "title_en": "Holiday", "text_en": "Closed."}),
    ("hours_changed", {"hours": {"pickup": "08:00-11:00", "online_whatsapp": "08:00-15:00"}}),
    ("online_only", {"via": "WhatsApp", "contacts": {"KK dan KTP-el": "0858-7031-0341"}}),
]  # fmt: skip
NEW = [
    ("restriction", {"period_days": 14, "online_app": "Smartdukcapil",
                     "urgent_in_person": ["pengambilan dokumen", "pendaftaran BPJS"]}),
    ("closure", {"reason": "COVID-19", "exceptions": ["legalisir"]}),
    ("free_text", {"title": {"id": "Libur", "en": "Holiday"}, "text": {"id": "Kantor tutup.", "en": "Closed."}}),
    ("hours_changed", {"hours": {}, "service_hours": [{"service": "pickup", "hours": "08:00-11:00"},
                                                      {"service": "online_whatsapp", "hours": "08:00-15:00"}]}),
    ("online_only", {"via": "WhatsApp", "contacts": [{"service": "KK dan KTP-el", "number": "0858-7031-0341"}]}),
]  # fmt: skip


async def _alembic(db: Database, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    async with db.engine.begin() as conn:
        if db.schema:
            await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')

        def run(sync_conn: Any) -> None:
            config.attributes["connection"] = sync_conn
            (command.downgrade if down else command.upgrade)(config, revision)

        await conn.run_sync(run)


async def _rows(db: Database) -> list[tuple[str, dict[str, Any]]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT template, data FROM announcements ORDER BY id"))).all()
    return [(t, d if isinstance(d, dict) else json.loads(d)) for t, d in rows]


async def test_migration_0002_moves_old_announcements_into_the_new_kinds(database):
    url, schema = database
    db = Database(url, schema=schema)
    try:
        await _alembic(db, "0001")
        async with db.engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO regions (code, name, level, path) VALUES ('33.75', 'Kota Pekalongan', "
                        "'kota', '33.75/')")
            )  # fmt: skip
            await conn.execute(
                sa.text("INSERT INTO offices (id, name, region_code, timezone, profile) VALUES "
                        "('kota-pekalongan', 'Dindukcapil Kota Pekalongan', '33.75', 'Asia/Jakarta', '{}')")
            )  # fmt: skip
            for template, data in OLD:
                await conn.execute(
                    sa.text(
                        "INSERT INTO announcements (office_id, template, data, services, targets, state, "
                        "created_at) VALUES ('kota-pekalongan', :t, :d, '[]', '{}', 'published', "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"t": template, "d": json.dumps(data)},
                )
        await _alembic(db, "head")
        migrated = await _rows(db)
        assert migrated == NEW
        for template, data in migrated:
            kinds.validate(template, data)  # each one is valid data of its kind, ready to publish again
        await _alembic(db, "0001", down=True)
        assert [row for row in await _rows(db)][:1] == OLD[
            :1
        ]  # restricted visits are closure/restricted again
    finally:
        await db.dispose()
