"""API keys: shown once at creation, stored only as a keyed hash, scoped to one office and one role.

When a key was last used is kept to the minute (``note_use``: one write per key per minute at most), for
the console's keys page.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from hub import signing
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import InvalidInput
from hub.logs import log
from hub.store.models import ApiKey, Office

ROLES = ("intake", "staff")


class KeyRequestError(InvalidInput):
    """Bad key request."""


async def create_key(hub: Hub, office_id: str, role: str, name: str) -> str:
    async with hub.db.transaction() as session:
        _, key = await add_key(session, hub.secret, office_id, role, name)
    return key


async def add_key(
    session: AsyncSession, deployment_key: bytes, office_id: str, role: str, name: str
) -> tuple[ApiKey, str]:
    """The key row (flushed) and the key itself, in the caller's transaction (the console audits it there)."""
    if role not in ROLES:
        raise KeyRequestError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    if await session.get(Office, office_id) is None:
        raise KeyRequestError(f"unknown office {office_id!r}")
    row = ApiKey(
        office_id=office_id,
        role=role,
        name=name,
        prefix=prefix,
        key_hash=signing.digest(deployment_key, f"key:{secret}"),
    )
    session.add(row)
    await session.flush()
    return row, f"hub_{prefix}_{secret}"


#: ``last_used_at`` is written at most once per this many seconds per key: no write per request.
USE_RESOLUTION = timedelta(seconds=60)


async def note_use(hub: Hub, key: ApiKey) -> None:
    """Record that ``key`` was used now, unless that was already recorded within ``USE_RESOLUTION``."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < USE_RESOLUTION:
        return
    try:
        async with hub.db.transaction() as session:
            await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key.id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - USE_RESOLUTION),
                )
                .values(last_used_at=now)
            )
    except OperationalError as exc:  # a busy database: the request goes on, the next one records it
        log.warning("key_use_not_recorded", key_id=key.id, error=type(exc).__name__)
        return
    key.last_used_at = now


async def authenticate(hub: Hub, presented: str) -> ApiKey | None:
    try:
        _, prefix, secret = presented.split("_", 2)
    except ValueError:
        return None
    async with hub.db.session() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked.is_(False)))
    if key is None:
        return None
    # Keys made before a `hub secret rotate` verify with the previous keys (``Hub.verification_keys``).
    for deployment_key in hub.verification_keys:
        if secrets.compare_digest(key.key_hash, signing.digest(deployment_key, f"key:{secret}")):
            return key
    return None
