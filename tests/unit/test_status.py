# ruff: noqa: E501  (status bodies read better unwrapped)
"""Office status (issue 11): validation names the field; announcements overlay the base status for their
window and it returns afterwards; corrections replace, cancellations remove. SQLite in-process, the clock
passed in (``at``), never waited for."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from hub.status import StatusError, set_status, status_at, validate_status
from hub.store.db import Database
from hub.store.models import Announcement, Base, Office, Region

PEKALONGAN = {
    "hours": {"senin": "08:00-11:00", "selasa": "08:00-11:00", "rabu": "08:00-11:00", "kamis": "08:00-11:00",
              "jumat": "08:00-10:00"},
    "quota": 50,
    "services": [
        {"key": "kk", "contacts": [{"kind": "whatsapp", "label": "KK dan KTP-el", "value": "0858-7031-0341"}]},
        {"key": "ktp-el"},
        {"key": "pindah-datang"},
    ],
    "exceptions": [{"date": "2026-12-25", "closed": True, "note": {"id": "Hari Natal", "en": "Christmas Day"}}],
}  # fmt: skip
#: Tuesday 8 December 2026, 09:00 WIB, in UTC.
TUESDAY_9 = datetime(2026, 12, 8, 2, 0)


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"hours": {"monday": "08:00-25:00"}}, "hours.monday[0]"),
        ({"hours": {"monday": "11:00-08:00"}}, "hours.monday[0]"),
        ({"quota": -1}, "quota"),
        ({"services": [{"key": "kk", "quota": -5}]}, "services[0].quota"),
        ({"hours": {"funday": "08:00-10:00"}}, "hours"),
        ({"services": [{"key": "kk"}], "exceptions": [{"date": "2026-01-01", "service": "kia", "closed": True}]},
         "exceptions[0].service"),
        ({"exceptions": [{"date": "2026-01-02", "until": "2026-01-01", "closed": True}]}, "exceptions[0]"),
        ({"services": [{"key": "kk", "hours": {"jumat": ["08:00-10:00", "09:00-11:00"]}}]}, "services[0].hours.friday"),
        ({"mode": "sometimes"}, "mode"),
    ],
)  # fmt: skip
def test_contradictions_are_refused_naming_the_field(status, field):
    with pytest.raises(StatusError) as caught:
        validate_status(status)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'status.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with database.transaction() as session:
        session.add(Region(code="33", name="Provinsi Jawa Tengah", level="provinsi", path="33/"))
        session.add(Region(code="34", name="DI Yogyakarta", level="provinsi", path="34/"))
        await session.flush()
        session.add(
            Region(code="33.75", name="Kota Pekalongan", level="kota", parent_code="33", path="33/33.75/")
        )
        await session.flush()
        session.add(Office(id="kota-pekalongan", name="Dindukcapil Kota Pekalongan", region_code="33.75"))
        session.add(Office(id="jateng", name="Disdukcapil Provinsi Jawa Tengah", region_code="33"))
        session.add(Office(id="diy", name="Disdukcapil DIY", region_code="34"))
        await session.flush()
        await set_status(session, await session.get(Office, "kota-pekalongan"), PEKALONGAN, "test",
                         at=datetime(2026, 12, 1))  # fmt: skip
    yield database
    await database.dispose()


async def _add(db: Database, **fields) -> int:
    fields.setdefault("state", "published")
    async with db.transaction() as session:
        ann = Announcement(office_id="kota-pekalongan", **fields)
        session.add(ann)
        await session.flush()
        return ann.id


async def _at(db: Database, at: datetime):
    async with db.session() as session:
        return await status_at(session, await session.get(Office, "kota-pekalongan"), at)


async def test_base_status_today_and_week(db):
    eff = await _at(db, TUESDAY_9)
    assert eff.today_line("id") == "Hari ini: buka 08.00–11.00 WIB, kuota 50 orang"
    assert eff.today_line("en") == "Today: open 08:00–11:00 WIB, quota 50 people"
    assert eff.weekly["friday"] == ["08:00-10:00"]
    assert [c.value for c in eff.service("kk").contacts] == ["0858-7031-0341"]
    assert eff.changes_at == datetime(2026, 12, 8, 17, 0)  # midnight WIB: "today" changes
    christmas = await _at(db, datetime(2026, 12, 25, 3, 0))
    assert christmas.today_line("en") == "Today: closed (Christmas Day)"
    assert christmas.since == datetime(2026, 12, 24, 17, 0)


async def test_announcement_overlays_then_status_returns(db):
    before = await _at(db, TUESDAY_9)
    ann = await _add(
        db,
        template="hours_changed",
        data={"hours": {"tuesday": "09:00-12:00"}, "daily_quota": 20},
        valid_from=datetime(2026, 12, 8, 1, 0),  # 08:00 WIB
        valid_until=datetime(2026, 12, 9, 17, 0),  # Thursday 00:00 WIB
    )
    just_before = await _at(db, datetime(2026, 12, 8, 0, 59))
    assert just_before.version == before.version
    assert just_before.changes_at == datetime(2026, 12, 8, 1, 0)
    during = await _at(db, TUESDAY_9)
    assert during.today_line("id") == "Hari ini: buka 09.00–12.00 WIB, kuota 20 orang"
    assert during.in_force == [ann] and during.since == datetime(2026, 12, 8, 1, 0)
    assert during.version != before.version
    assert during.weekly == {"tuesday": ["09:00-12:00"]}
    after = await _at(db, datetime(2026, 12, 10, 2, 0))  # Thursday: back to the base
    assert after.in_force == [] and after.today_line("id") == "Hari ini: buka 08.00–11.00 WIB, kuota 50 orang"
    assert after.since == datetime(2026, 12, 9, 17, 0)


async def test_later_publication_wins_corrections_replace_cancelling_a_correction_withdraws_both(db):
    window = {"valid_from": datetime(2026, 12, 7), "valid_until": datetime(2026, 12, 20)}
    first = await _add(db, template="restriction", data={"urgent_in_person": ["akta kematian"]}, **window)
    second = await _add(db, template="closure", data={}, **window)
    assert (await _at(db, TUESDAY_9)).mode == "closed"
    assert (await _at(db, TUESDAY_9)).today_line("id") == "Hari ini: tutup"
    fixed = await _add(db, template="online_only", data={"via": "WhatsApp"}, corrects_id=second, **window)
    eff = await _at(db, TUESDAY_9)
    assert eff.mode == "online_only" and eff.in_force == [first, fixed]
    async with db.transaction() as session:
        cancelled = await session.get(Announcement, fixed)
        cancelled.state, cancelled.cancelled_at = "cancelled", datetime(2026, 12, 8, 1, 0)
    eff = await _at(db, TUESDAY_9)
    # Cancelling a correction that went out withdraws what it corrected too (CAP: a Cancel of an Update).
    assert eff.mode == "restricted" and eff.in_force == [first]
    assert eff.mode == "restricted" and eff.in_force == [first]
    assert eff.today_line("id") == "Hari ini: buka 08.00–11.00 WIB, khusus keperluan mendesak, kuota 50 orang"


async def test_scheduled_counts_from_its_publish_time_and_suspension_names_a_service(db):
    ann = await _add(
        db,
        template="suspension",
        state="scheduled",
        data={"service": "Kartu Keluarga", "alternative": {"id": "Ajukan lewat WhatsApp"}},
        publish_at=datetime(2026, 12, 8, 3, 0),
        valid_from=datetime(2026, 12, 7),
    )
    assert (await _at(db, TUESDAY_9)).service("kk").mode == "in_person"
    later = await _at(db, datetime(2026, 12, 8, 4, 0))
    assert later.in_force == [ann] and later.service("kk").mode == "closed"
    assert later.service("ktp-el").mode == "in_person"


async def test_an_announcement_to_the_province_shapes_each_office_in_it_and_no_other(db):
    window = {"valid_from": datetime(2026, 12, 7), "valid_until": datetime(2026, 12, 20)}
    province = await _add(db, template="closure", data={}, targets={"regions": ["33"]}, **window)
    async with db.transaction() as session:
        session.add(Announcement(office_id="jateng", state="published", template="closure", data={},
                                 targets={"topics": ["jateng"]}, **window))  # fmt: skip
        session.add(Announcement(office_id="diy", state="published", template="closure", data={},
                                 targets={"regions": ["34"]}, **window))  # fmt: skip
    async with db.transaction() as session:
        (await session.get(Announcement, province)).office_id = "jateng"  # stored under the province office
    eff = await _at(db, TUESDAY_9)
    assert eff.mode == "closed" and eff.in_force == [province]
