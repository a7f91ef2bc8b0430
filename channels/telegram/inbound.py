"""Inbound: Telegram updates (webhook or getUpdates long polling) as the hub's neutral records."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from telegram import Bot, Chat, ChatMember, Message, Update, User
from telegram.error import RetryAfter, TelegramError

from channels.base import (
    EndpointKind,
    Inbound,
    InboundSink,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
)
from channels.telegram.errors import _retry_after_seconds

log = logging.getLogger("channels.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "channel_post", "callback_query", "my_chat_member")


#: Who may manage a group: its creator and its administrators (Bot API ``ChatMember.status``).
ADMIN_STATUSES = (ChatMember.OWNER, ChatMember.ADMINISTRATOR)


def _present(member: ChatMember) -> bool:
    """Whether a chat member (here: the bot) is in the chat; restricted members may or may not be."""
    if member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR, ChatMember.OWNER):
        return True
    return member.status == ChatMember.RESTRICTED and bool(getattr(member, "is_member", False))


class TelegramInbound:
    """The inbound half of ``TelegramChannel``: updates in, ``Inbound`` records out."""

    name: str
    mode: str
    webhook_secret: str | None
    poll_timeout: int
    username: str | None
    bot_id: str
    _bot: Bot
    _opened: bool
    _membership: dict[str, tuple[str, float]]

    async def open(self) -> None:  # provided by the channel
        raise NotImplementedError

    @staticmethod
    def _chat_kind(chat: Chat) -> EndpointKind:
        if chat.type == Chat.PRIVATE:
            return "person"
        if chat.type == Chat.CHANNEL:
            return "channel"
        return "group"

    @staticmethod
    def _locale(user: User | None) -> str:
        code = (user.language_code or "") if user else ""
        return "en" if code.lower().startswith("en") else "id"

    def _member_event(self, chat: Chat, sender: User | None, text: str) -> list[Inbound]:
        """One membership change as one record, even though Telegram reports it twice."""
        now = time.monotonic()
        key = str(chat.id)
        last = self._membership.get(key)
        self._membership[key] = (text, now)
        if len(self._membership) > 4096:
            self._membership = {k: v for k, v in self._membership.items() if now - v[1] < 60}
        if last is not None and last[0] == text and now - last[1] < 60:
            return []
        return [
            Inbound(
                channel=self.name,
                kind="member",
                address=key,
                sender=str(sender.id) if sender else "",
                chat_kind=self._chat_kind(chat),
                text=text,
                locale=self._locale(sender),
            )
        ]

    def _is_me(self, user: User) -> bool:
        return str(user.id) == self.bot_id or (
            bool(self.username) and (user.username or "").lower() == (self.username or "").lower()
        )

    def _from_message(self, message: Message) -> list[Inbound]:
        chat = message.chat
        sender = message.from_user
        if message.new_chat_members and any(self._is_me(u) for u in message.new_chat_members):
            return self._member_event(chat, sender, "added")
        if message.left_chat_member and self._is_me(message.left_chat_member):
            return self._member_event(chat, sender, "removed")
        text = message.text or message.caption
        if not text:
            return []
        common: dict[str, Any] = {
            "channel": self.name,
            "address": str(chat.id),
            "sender": str(sender.id) if sender else "",
            "chat_kind": self._chat_kind(chat),
            "locale": self._locale(sender),
            "reply_ref": str(message.message_id),
            "sender_is_admin": self._admin_by_message(message),
        }
        stripped = text.strip()
        if stripped.startswith("/") and len(stripped) > 1 and not stripped[1].isspace():
            head, *args = stripped.split()
            name, _, target = head[1:].partition("@")
            if target and self.username and target.lower() != self.username.lower():
                return []  # a command for another bot in the same group
            return [Inbound(kind="command", command=name.lower(), args=tuple(args), text=text, **common)]
        return [Inbound(kind="text", text=text, **common)]

    @staticmethod
    def _admin_by_message(message: Message) -> bool | None:
        """What the message itself proves: only admins post in a channel, and a message sent as the group
        itself (``sender_chat`` is the chat) comes from an anonymous administrator. None: ask Telegram."""
        if message.chat.type == Chat.CHANNEL:
            return True
        if message.sender_chat is not None and message.sender_chat.id == message.chat.id:
            return True
        return None

    async def _with_admins(self, records: list[Inbound]) -> list[Inbound]:
        """Group commands and button presses, with whether their sender is an admin (getChatMember).

        A failed look-up leaves None, which the hub treats as "not shown to be an admin".
        """
        found = []
        for record in records:
            if (
                record.chat_kind == "group"
                and record.kind in ("command", "button")
                and record.sender_is_admin is None
                and record.sender.lstrip("-").isdigit()
            ):
                try:
                    member = await self._bot.get_chat_member(int(record.address), int(record.sender))
                except TelegramError as exc:
                    log.warning("telegram: getChatMember failed: %s", exc)
                else:
                    record = dataclasses.replace(record, sender_is_admin=member.status in ADMIN_STATUSES)
            found.append(record)
        return found

    def _from_update(self, update: Update) -> tuple[list[Inbound], str | None]:
        """Records for one update, and the callback query id the caller must answer, if any."""
        if update.callback_query is not None:
            query = update.callback_query
            chat = query.message.chat if query.message is not None else None
            record = Inbound(
                channel=self.name,
                kind="button",
                address=str(chat.id) if chat else str(query.from_user.id),
                sender=str(query.from_user.id),
                chat_kind=self._chat_kind(chat) if chat else "person",
                data=query.data or "",
                locale=self._locale(query.from_user),
                reply_ref=str(query.message.message_id) if query.message is not None else "",
            )
            return [record], query.id
        if update.my_chat_member is not None:
            change = update.my_chat_member
            before, after = _present(change.old_chat_member), _present(change.new_chat_member)
            if before == after:  # e.g. promoted to administrator: still there
                return [], None
            return self._member_event(change.chat, change.from_user, "added" if after else "removed"), None
        message = update.message or update.channel_post
        if message is not None:
            return self._from_message(message), None
        return [], None

    async def _answer(self, query_id: str | None) -> None:
        """Stop the button's spinner; a failure here must not lose the press itself."""
        if query_id is None:
            return
        try:
            await self._bot.answer_callback_query(query_id)
        except TelegramError as exc:
            log.info("telegram: answerCallbackQuery failed: %s", exc)

    async def inbound_from_update(self, data: Mapping[str, Any]) -> list[Inbound]:
        """Turn one Update (as JSON) into records, answering a callback query on the way."""
        if not self._opened:
            await self.open()
        try:
            update = Update.de_json(dict(data), self._bot)
            records, query_id = self._from_update(update)
        except Exception:  # authentic but unreadable: answering an error would only make Telegram resend it
            log.exception("telegram: update %s could not be read", data.get("update_id"))
            return []
        await self._answer(query_id)
        return await self._with_admins(records)

    async def handle_webhook(self, request: WebhookRequest) -> tuple[list[Inbound], WebhookResponse]:
        if not self.webhook_secret:
            raise WebhookRejected("telegram: no webhook_secret configured")
        given = next((v for k, v in request.headers.items() if k.lower() == SECRET_HEADER.lower()), "")
        if not hmac.compare_digest(given.encode(), self.webhook_secret.encode()):
            raise WebhookRejected("telegram: bad or missing secret token")
        try:
            data = json.loads(request.body)
        except ValueError:
            return [], WebhookResponse(400, "invalid JSON")
        if not isinstance(data, dict) or "update_id" not in data:
            return [], WebhookResponse(400, "not a Telegram update")
        return await self.inbound_from_update(data), WebhookResponse(200, "")

    async def listen(self, sink: InboundSink) -> None:
        """Long-poll getUpdates; an update is confirmed (offset) only after its records reached ``sink``."""
        if self.mode == "webhook":
            raise NotImplementedError("telegram runs in webhook mode: updates arrive by handle_webhook")
        if not self._opened:
            await self.open()
        try:
            await self._bot.delete_webhook()  # getUpdates answers 409 while a webhook is set
        except TelegramError as exc:
            log.warning("telegram: deleteWebhook failed: %s", exc)
        offset: int | None = None
        backoff = 1.0
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=offset, timeout=self.poll_timeout, allowed_updates=list(ALLOWED_UPDATES)
                )
            except RetryAfter as exc:
                await asyncio.sleep(_retry_after_seconds(exc))
                continue
            except (TelegramError, OSError) as exc:
                log.warning("telegram: getUpdates failed (%s); retrying in %.0fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            for update in updates:
                try:
                    records, query_id = self._from_update(update)
                    await self._answer(query_id)
                    for record in await self._with_admins(records):
                        await sink(record)
                except Exception:
                    log.exception("telegram: update %s could not be handled", update.update_id)
                offset = update.update_id + 1
