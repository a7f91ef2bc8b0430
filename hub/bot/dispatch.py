"""Answering an inbound record: one chat at a time, each record to its command's handler."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

from channels.base import Inbound
from hub import applicants
from hub.bot.conversation import Conversation, deactivate
from hub.bot.mydata import cmd_erase, cmd_mydata
from hub.bot.offices import cmd_hours, cmd_services
from hub.bot.relay import cmd_forwarded, cmd_relay, relay_button, relay_reaction
from hub.bot.subscribe import button, cmd_subscribe, cmd_unsubscribe
from hub.bot.track import cmd_track
from hub.bot.vocabulary import command_of
from hub.context import Hub

#: Commands that change what a group receives or what it is: in a group only its admins may send them
#: (and press the subscription buttons). Commands that only read (``jam``, ``layanan``) stay open to all.
GROUP_ADMIN_COMMANDS = frozenset({"langganan", "berhenti", "kelurahan", "hapus"})

#: One lock per chat: a chat's messages are answered one at a time, so its replies are created (and,
#: by hub.delivery.order, sent) in the order the messages came. Weak values: idle chats cost nothing.
_CHATS: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


async def answer(hub: Hub, record: Inbound) -> None:
    """Answer one inbound record; records from the same chat are answered in the order they came."""
    if record.channel not in hub.channels:
        return
    key = (record.channel, record.address)
    lock = _CHATS.get(key)
    if lock is None:
        lock = _CHATS[key] = asyncio.Lock()
    async with lock:
        await _answer(hub, record)


async def _answer(hub: Hub, record: Inbound) -> None:
    convo = Conversation(hub, record)
    if record.kind == "member":
        if record.text == "added":
            await convo.reply(convo.t("relay_added"))
        elif record.text == "removed":
            await deactivate(hub, record.channel, record.address, "bot removed from the group")
        return
    if record.kind == "reaction":
        await relay_reaction(convo)
        return
    if record.kind == "button":
        # A relay's "Sudah diteruskan" is any member's to press: its own chat is all it must come from.
        if await relay_button(convo, record.data):
            return
        if await convo.may_change_group():
            await button(convo, record.data)
        return
    if record.kind == "command":
        found = command_of(record.command)
        if found is not None:
            name, language = found
            if language is not None:
                convo.locale = language
            args = list(record.args)
            subscribes = name == "start" and bool(args) and args[0].startswith("t")
            if (name in GROUP_ADMIN_COMMANDS or subscribes) and not await convo.may_change_group():
                return
            await HANDLERS[name](convo, args)
            return
    if record.kind == "text" and not convo.private:
        return  # a group's own conversation is none of the bot's business
    await convo.not_understood()


async def cmd_help(convo: Conversation, args: list[str]) -> None:
    await convo.reply(convo.t("help"))


async def cmd_start(convo: Conversation, args: list[str]) -> None:
    """Welcome; or a deep link's payload: ``c<code>`` links an application, ``t<topic>`` subscribes."""
    payload = args[0] if args else ""
    if payload.startswith("c"):
        await _start_case(convo, payload)
        return
    if payload.startswith("t"):
        await cmd_subscribe(convo, [payload[1:]])
        return
    await convo.reply(convo.t("welcome") + "\n\n" + convo.t("help"))


async def _start_case(convo: Conversation, code: str) -> None:
    """A receipt's code links the private chat it is sent in, once; in a group it links nothing.

    A code typed in a group has been read by the group: it is voided, and the answer is the same whether
    the code was valid or not, so the group learns nothing of the case.
    """
    if not convo.private:
        await applicants.void_link_code(convo.hub, code)
        await convo.reply(convo.t("code_private"))
        return
    try:
        case = await applicants.link_case(
            convo.hub,
            code,
            convo.record.channel,
            convo.record.sender or convo.record.address,
            locale=convo.locale,
        )
    except applicants.CodeRefused as refused:
        texts = {"used": convo.t("code_used"), "expired": convo.t("code_expired")}
        await convo.reply(texts.get(refused.reason) or convo.t("bad_code"))
        return
    await convo.reply(
        convo.t(
            "linked",
            document=case.document,
            reference=case.reference,
            status=convo.status_word(case.status),
        )
    )


#: Every command the vocabulary names, and who answers it.
HANDLERS: dict[str, Callable[[Conversation, list[str]], Awaitable[None]]] = {
    "start": cmd_start,
    "langganan": cmd_subscribe,
    "berhenti": cmd_unsubscribe,
    "jam": cmd_hours,
    "layanan": cmd_services,
    "lacak": cmd_track,
    "bantuan": cmd_help,
    "kelurahan": cmd_relay,
    "diteruskan": cmd_forwarded,
    "dataku": cmd_mydata,
    "hapus": cmd_erase,
}
