"""One inbound record being answered: who wrote, where to answer, in which language, and the reply."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from channels.base import Inbound
from hub import delivery
from hub.bot.texts import DEFAULT_LOCALE, BotTexts, load_texts
from hub.context import Hub
from hub.store.models import Endpoint
from hub.subscriptions import endpoint_for


def bot_texts(hub: Hub) -> BotTexts:
    """The bot's texts, from ``bot/`` in the templates directory the hub renders from."""
    return load_texts(hub.renderer.root / "bot")


class Conversation:
    """One inbound record being answered."""

    def __init__(self, hub: Hub, record: Inbound) -> None:
        self.hub, self.record = hub, record
        self.texts = bot_texts(hub)
        self.locale = record.locale if record.locale in self.texts.locales else DEFAULT_LOCALE
        self.channel = hub.channel(record.channel)
        self.prefix = self.channel.capabilities.command_prefix

    def t(self, key: str, **values: Any) -> str:
        """The reply ``key`` in the conversation's language, with the channel's command prefix."""
        return self.texts.get(self.locale, key).format(p=self.prefix, **values)

    def status_word(self, status: str) -> str:
        """An application's status as the citizen's language names it."""
        return self.texts.status_word(self.locale, status)

    @property
    def private(self) -> bool:
        return self.record.chat_kind == "person"

    async def may_change_group(self) -> bool:
        """Whether the sender may change what this chat receives or is; says why not when they may not.

        Anyone may in their own chat; in a group only its admins, as the channel's adapter found them
        (``Inbound.sender_is_admin``). When the adapter could not tell, the answer is no, for now.
        """
        if self.private or self.record.sender_is_admin:
            return True
        if self.record.sender_is_admin is None:
            await self.reply(self.t("admin_unknown"))
        else:
            await self.reply(self.t("admins_only"))
        return False

    async def person(self) -> Endpoint:
        """The citizen's own endpoint (a person's address, not the group they wrote in)."""
        async with self.hub.db.transaction() as session:
            return await endpoint_for(
                session, self.record.channel, self.record.sender or self.record.address, locale=self.locale
            )

    async def here(self) -> Endpoint:
        """Where to answer: the chat the record came from.

        A group's endpoint comes back to life only when someone adds the bot again (a kicked bot's group is
        "gone" until then); a person's whenever they write, since writing is asking again.
        """
        if self.private:
            return await self.person()
        rejoined = self.record.kind == "member" and self.record.text == "added"
        async with self.hub.db.transaction() as session:
            return await endpoint_for(
                session,
                self.record.channel,
                self.record.address,
                kind=self.record.chat_kind,
                locale=self.locale,
                reactivate=rejoined,
            )

    async def reply(
        self, text: str, buttons: list[dict[str, str]] | None = None, *, to: Endpoint | None = None
    ) -> int:
        """Queue ``text`` on the urgent lane to ``to`` (default: this chat); buttons where supported."""
        endpoint = to or await self.here()
        if buttons and not self.channel.capabilities.buttons:
            buttons = [b for b in buttons if b.get("url")]
        draft = delivery.Draft(
            kind="reply",
            lane="urgent",
            group="system",
            template="reply",
            context={"text": text, "buttons": buttons or [], "office": {}, "tz": "Asia/Jakarta"},
            endpoint_ids=[endpoint.id],
            renditions=[(self.record.channel, self.locale)],
        )
        message = await delivery.create_message(self.hub, draft)
        await self.hub.queue.plan_soon(message.id, "urgent")
        return message.id

    async def not_understood(self) -> None:
        await self.reply(self.t("unknown") + "\n" + self.t("help"))


async def deactivate(hub: Hub, channel: str, address: str, reason: str) -> None:
    """Stop sending to a chat (the bot was removed from the group); erasure is ``hub.citizens``'s."""
    async with hub.db.transaction() as session:
        endpoint = await session.scalar(
            select(Endpoint).where(Endpoint.channel == channel, Endpoint.address == address)
        )
        if endpoint is not None:
            endpoint.active, endpoint.deactivated_reason = False, reason
