"""Kelurahan relay groups: a one-time code from the office, sent in the group as ``kelurahan KODE``;
and the group's confirmation that it passed a broadcast on (``diteruskan KODE [cara]``, ``OK KODE``, the
"Sudah diteruskan" button and its means buttons, a reaction), recorded by ``hub.relays.acks``."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select

from hub.bot.conversation import Conversation
from hub.context import Hub
from hub.errors import NotFound
from hub.relays import acks, codes
from hub.store.models import Endpoint, KeyValue, Office, Topic
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


async def cmd_forwarded(convo: Conversation, args: list[str]) -> None:
    """``diteruskan KODE [cara]`` (``!diteruskan`` on Matrix, ``OK KODE`` by SMS): the relay passed it on."""
    if not args:
        # A citizen answering a broadcast SMS with a bare "OK" is not a relay confirming anything.
        if await _is_relay(convo):
            await convo.reply(codes.text(convo.locale, "usage", p=convo.prefix))
        else:
            await convo.not_understood()
        return
    means = codes.means_of(args[1]) if len(args) > 1 else None
    delivery_id = codes.read_code(convo.hub.verification_keys, args[0])
    if delivery_id is None and not await _is_relay(convo):
        await convo.not_understood()  # "OK terima kasih" from a citizen: no code meant
        return
    via = "reply" if not convo.prefix else "command"
    await _acknowledge(convo, delivery_id, via, means, ask_means=False)


async def relay_button(convo: Conversation, data: str) -> bool:
    """A press on "Sudah diteruskan" (``ra:KODE``) or on a means (``rm:KODE:wa``); False: not ours."""
    kind, _, rest = data.partition(":")
    if kind not in ("ra", "rm"):
        return False
    code, _, word = rest.partition(":")
    delivery_id = codes.read_code(convo.hub.verification_keys, code)
    means = codes.means_of(word) if kind == "rm" else None
    if kind == "rm" and means is None:
        delivery_id = None
    await _acknowledge(convo, delivery_id, "button", means, ask_means=kind == "ra", code=code)
    return True


async def relay_reaction(convo: Conversation) -> None:
    """A reaction on the hub's broadcast (or its reminder) in a relay room confirms it; any other
    reaction is none of the bot's business and gets no answer."""
    record = convo.record
    delivery_id = await acks.delivery_of_event(convo.hub, record.channel, record.address, record.reply_ref)
    if delivery_id is None:
        return
    result = await acks.acknowledge(
        convo.hub,
        delivery_id,
        channel=record.channel,
        address=record.address,
        sender=record.sender,
        via="reaction",
    )
    if result.outcome == "confirmed":
        await convo.reply(codes.text(convo.locale, "confirmed"))


async def _acknowledge(
    convo: Conversation,
    delivery_id: int | None,
    via: str,
    means: str | None,
    *,
    ask_means: bool,
    code: str = "",
) -> None:
    record = convo.record
    if delivery_id is None:
        await convo.reply(codes.text(convo.locale, "refused"))
        return
    result = await acks.acknowledge(
        convo.hub,
        delivery_id,
        channel=record.channel,
        address=record.address,
        sender=record.sender or record.address,
        via=via,
        means=means,
    )
    t = convo.locale
    if result.outcome == "refused":
        await convo.reply(codes.text(t, "refused"))
    elif result.outcome == "already":
        await convo.reply(codes.text(t, "already"))
    elif result.outcome == "means" or (result.outcome == "confirmed" and means):
        await convo.reply(codes.text(t, "means_recorded", means=codes.means_name(t, means)))
    elif ask_means and convo.channel.capabilities.buttons:
        buttons = [
            {"text": codes.means_name(t, m), "data": f"rm:{code.upper()}:{codes.MEANS_SHORT[m]}"}
            for m in codes.MEANS
        ]
        await convo.reply(codes.text(t, "ask_means"), buttons)
    else:
        await convo.reply(codes.text(t, "confirmed"))


async def _is_relay(convo: Conversation) -> bool:
    async with convo.hub.db.session() as session:
        found = await session.scalar(
            select(Endpoint.relay_office_id).where(
                Endpoint.channel == convo.record.channel, Endpoint.address == convo.record.address
            )
        )
    return found is not None
