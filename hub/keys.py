"""API keys: shown once at creation, stored only as a keyed hash, scoped to one office and one role."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from hub import signing
from hub.context import Hub
from hub.errors import InvalidInput
from hub.store.models import ApiKey, Office

ROLES = ("intake", "staff")


class KeyRequestError(InvalidInput):
    """Bad key request."""


async def create_key(hub: Hub, office_id: str, role: str, name: str) -> str:
    if role not in ROLES:
        raise KeyRequestError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    async with hub.db.transaction() as session:
        if await session.get(Office, office_id) is None:
            raise KeyRequestError(f"unknown office {office_id!r}")
        session.add(
            ApiKey(
                office_id=office_id,
                role=role,
                name=name,
                prefix=prefix,
                key_hash=signing.digest(hub.secret, f"key:{secret}"),
            )
        )
    return f"hub_{prefix}_{secret}"


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
