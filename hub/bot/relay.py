"""Kelurahan relay groups: a one-time code from the office, sent in the group as ``kelurahan KODE``."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select

from hub.bot.conversation import Conversation
from hub.context import Hub
from hub.errors import NotFound
from hub.store.models import KeyValue, Office, Topic
from hub.subscriptions import endpoint_for, set_state


async def relay_code(hub: Hub, office_id: str) -> str:
    """A one-time code a kelurahan admin sends in their group to register it as a relay."""
    code = "K" + secrets.token_hex(4).upper()
    async with hub.db.transaction() as session:
        if await session.get(Office, office_id) is None:
            raise NotFound(f"unknown office {office_id!r}")
        session.add(KeyValue(key=f"relay:{code}", value=office_id))
    return code


async def cmd_relay(convo: Conversation, args: list[str]) -> None:
    """Register a kelurahan group with a one-time code from ``hub relays code``."""
    if convo.private or not args:
        await convo.reply(convo.t("bad_code"))
        return
    hub = convo.hub
    async with hub.db.transaction() as session:
        row = await session.get(KeyValue, f"relay:{args[0]}")
        if row is None:
            await convo.reply(convo.t("bad_code"))
            return
        office = await session.get(Office, row.value)
        await session.execute(delete(KeyValue).where(KeyValue.key == f"relay:{args[0]}"))
        endpoint = await endpoint_for(
            session,
            convo.record.channel,
            convo.record.address,
            kind=convo.record.chat_kind,
            locale=convo.locale,
        )
        endpoint.kind, endpoint.relay_office_id = convo.record.chat_kind, office.id if office else None
        general = await session.scalar(
            select(Topic).where(Topic.office_id == row.value, Topic.service.is_(None))
        )
        if general is not None:
            await set_state(session, general.id, endpoint.id, "confirmed")
        name = office.name if office else row.value
    await convo.reply(convo.t("relay_ok", office=name))
