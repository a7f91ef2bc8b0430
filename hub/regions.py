"""Regions, offices and their topics, loaded from a file in the format of shared/scenarios/offices.toml.

Regions form a tree (provinsi -> kabupaten/kota -> kecamatan -> kelurahan/desa). A region's ``path``
lists its ancestors' codes, so "everything below Banten" is a prefix match.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import freshness
from hub.context import Hub
from hub.errors import InvalidInput
from hub.store.models import Announcement, Office, Region, Topic

LEVELS = ("provinsi", "kota", "kabupaten", "kecamatan", "kelurahan", "desa")
#: Every office gets a general topic and one per common service.
SERVICES = {
    "ktp-el": "KTP-el",
    "kk": "Kartu Keluarga",
    "kia": "Kartu Identitas Anak",
    "akta": "Akta pencatatan sipil",
    "pindah-datang": "Pindah datang",
}
ZONES = ("Asia/Jakarta", "Asia/Pontianak", "Asia/Makassar", "Asia/Jayapura")


class DataFileError(InvalidInput):
    """A regions file that cannot be loaded; the message names the entry and the field."""


@dataclass
class LoadReport:
    regions: int = 0
    offices: int = 0
    topics: int = 0


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{path}: not valid TOML: {exc}") from exc


async def load(hub: Hub, data: dict[str, Any]) -> LoadReport:
    """Insert or update regions, offices and default topics; running it twice changes nothing."""
    regions, offices = _validate(data)
    report = LoadReport()
    async with hub.db.transaction() as session:
        paths: dict[str, str] = {r.code: r.path for r in (await session.execute(select(Region))).scalars()}
        for entry in _parents_first(regions):
            parent = entry.get("parent")
            if parent and parent not in paths:
                raise DataFileError(f"region {entry['code']}: parent {parent!r} is not defined")
            path = (paths[parent] if parent else "") + entry["code"] + "/"
            await _upsert_region(session, entry["code"], entry["name"], entry["level"], parent, path)
            paths[entry["code"]] = path
            report.regions += 1
            for name in entry.get("kecamatan", []):
                code = f"{entry['code']}.{slug(name)}"
                await _upsert_region(
                    session, code, f"Kecamatan {name}", "kecamatan", entry["code"], path + code + "/"
                )
                paths[code] = path + code + "/"
                report.regions += 1
        for entry in offices:
            if entry["region"] not in paths:
                raise DataFileError(f"office {entry['id']}: region {entry['region']!r} is not defined")
            profile = {k: entry[k] for k in ("online_app", "contacts") if k in entry}
            profile["changes"] = entry.get("change", [])
            office = await session.get(Office, entry["id"])
            if office is None:
                session.add(
                    Office(
                        id=entry["id"],
                        name=entry["name"],
                        region_code=entry["region"],
                        timezone=entry.get("timezone", "Asia/Jakarta"),
                        profile=profile,
                    )
                )
            else:
                office.name, office.region_code = entry["name"], entry["region"]
                office.timezone, office.profile = entry.get("timezone", "Asia/Jakarta"), profile
            report.offices += 1
            await session.flush()
            report.topics += await ensure_topics(session, entry["id"], entry["name"])
        await freshness.touch(session)  # names, zones and numbers on the public pages
    return report


async def ensure_topics(session: AsyncSession, office_id: str, office_name: str) -> int:
    existing = set((await session.execute(select(Topic.slug).where(Topic.office_id == office_id))).scalars())
    wanted = {office_id: (None, office_name)}
    wanted.update({f"{office_id}/{key}": (key, f"{office_name}: {label}") for key, label in SERVICES.items()})
    added = 0
    for topic_slug, (service, name) in wanted.items():
        if topic_slug not in existing:
            session.add(Topic(slug=topic_slug, office_id=office_id, service=service, name=name))
            added += 1
    return added


async def _upsert_region(
    session: AsyncSession, code: str, name: str, level: str, parent: str | None, path: str
) -> None:
    region = await session.get(Region, code)
    if region is None:
        session.add(Region(code=code, name=name, level=level, parent_code=parent, path=path))
    else:
        region.name, region.level, region.parent_code, region.path = name, level, parent, path
    await session.flush()


def _validate(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    regions = data.get("region", [])
    offices = data.get("office", [])
    if not isinstance(regions, list) or not isinstance(offices, list):
        raise DataFileError("expected [[region]] and [[office]] tables")
    for i, entry in enumerate(regions, 1):
        for key in ("code", "name", "level"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise DataFileError(f"region #{i}: missing or empty {key!r}")
        if entry["level"] not in LEVELS:
            raise DataFileError(
                f"region {entry['code']}: level {entry['level']!r} is not one of {', '.join(LEVELS)}"
            )
    for i, entry in enumerate(offices, 1):
        for key in ("id", "name", "region"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise DataFileError(f"office #{i}: missing or empty {key!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", entry["id"]):
            raise DataFileError(f"office {entry['id']!r}: id must be lowercase letters, digits and dashes")
        if entry.get("timezone", "Asia/Jakarta") not in ZONES:
            raise DataFileError(f"office {entry['id']}: timezone must be one of {', '.join(ZONES)}")
    return regions, offices


def _parents_first(regions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_code = {r["code"]: r for r in regions}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(entry: dict[str, Any], trail: tuple[str, ...] = ()) -> None:
        if entry["code"] in seen:
            return
        if entry["code"] in trail:
            raise DataFileError(f"region {entry['code']}: parent cycle")
        parent = entry.get("parent")
        if parent in by_code:
            visit(by_code[parent], (*trail, entry["code"]))
        seen.add(entry["code"])
        ordered.append(entry)

    for entry in regions:
        visit(entry)
    return ordered


async def offices_under(session: AsyncSession, region_code: str) -> list[str]:
    """Ids of every office at or below a region."""
    path = await session.scalar(select(Region.path).where(Region.code == region_code))
    if path is None:
        raise LookupError(f"unknown region {region_code!r}")
    rows = await session.execute(
        select(Office.id).join(Region, Region.code == Office.region_code).where(Region.path.startswith(path))
    )
    return list(rows.scalars())


async def office_in_scope(session: AsyncSession, staff_office: str, office_id: str) -> bool:
    """True when ``office_id`` sits at or below the region of ``staff_office`` (a staff member's subtree)."""
    staff = await session.get(Office, staff_office)
    if staff is None:
        return False
    return office_id in await offices_under(session, staff.region_code)


def ancestors(region: Region | None) -> list[str]:
    """The region's own code and every code above it, top first."""
    return [code for code in region.path.split("/") if code] if region else []


def concerns(announcement: Announcement, office: Office, regions: list[str]) -> bool:
    """True when the announcement's audience includes ``office`` (``regions``: its ``ancestors``).

    An announcement names its audience by topics (``kota-serang``, ``kota-serang/kk``) or regions
    (``36``); its ``office_id`` is only the first office that audience reaches.
    """
    targets = announcement.targets or {}
    topics = [str(t) for t in targets.get("topics", [])]
    if any(t.split("/", 1)[0] == office.id for t in topics):
        return True
    if any(str(code) in regions for code in targets.get("regions", [])):
        return True
    return not topics and not targets.get("regions") and announcement.office_id == office.id


async def nearby_offices(session: AsyncSession, office: Office) -> tuple[list[str], Select[Any]]:
    """The office's ``ancestors`` and a query of the offices in its province (its top region), where any
    announcement that ``concerns`` it is stored: a region-wide one is stored under an office of that
    region, never outside it."""
    regions = ancestors(await session.get(Region, office.region_code))
    top = await session.get(Region, regions[0]) if regions else None
    nearby = select(Office.id).join(Region, Region.code == Office.region_code)
    if top is not None:
        nearby = nearby.where(Region.path.startswith(top.path, autoescape=True))
    else:
        nearby = nearby.where(Office.id == office.id)
    return regions, nearby
