"""A loopback Telegram Bot API server for tests, faithful to Telegram's documented limits and errors.

It runs aiohttp in a background thread, so sync and async tests (and workers in other processes) can
all talk to it; every method that touches state takes a lock. Point PTB at it with
``Bot(fake.token, base_url=fake.base_url)``.

Typical use::

    fake = FakeTelegram().start()
    fake.add_private(1001)
    fake.add_blocked(1002)
    ...                                  # send with the adapter, base_url=fake.base_url
    assert [m.text for m in fake.messages(1001)] == ["halo"]
    assert fake.too_many_requests == 0
    fake.stop()

Groups know their members (``add_group(..., creator=, admins=)``, ``set_member``; whoever writes in a group
is a member from then on), so ``getChatMember`` and ``getChatAdministrators`` answer as Telegram does.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from tests.fakes.threaded import ThreadedServer, wait_for_json

MAX_TEXT = 4096
SUPPORTED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji",
    "code", "pre", "blockquote",
}  # fmt: skip
CANT_PARSE = "Bad Request: can't parse entities: "
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
#: ``ChatMember.status`` values of the Bot API ("creator" is the owner, "kicked" a banned member).
MEMBER_STATUSES = ("creator", "administrator", "member", "restricted", "left", "kicked")
#: The user Telegram shows as the sender of an anonymous administrator's message in a group.
GROUP_ANONYMOUS_BOT = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}


def member_json(user: dict[str, Any], status: str) -> dict[str, Any]:
    """A ChatMember object as the Bot API documents it for ``status`` (every field it requires)."""
    if status not in MEMBER_STATUSES:
        raise ValueError(f"unknown chat member status {status!r}")
    data: dict[str, Any] = {"user": user, "status": status}
    if status == "creator":
        data["is_anonymous"] = False
    elif status == "administrator":
        rights = ("can_manage_chat", "can_delete_messages", "can_manage_video_chats",
                  "can_restrict_members", "can_change_info", "can_invite_users")  # fmt: skip
        data.update({right: True for right in rights}, can_be_edited=False, is_anonymous=False)
        data.update(can_promote_members=False, can_post_stories=False, can_edit_stories=False)
        data.update(can_delete_stories=False)
    elif status == "restricted":
        rights = ("can_send_messages", "can_send_audios", "can_send_documents", "can_send_photos",
                  "can_send_videos", "can_send_video_notes", "can_send_voice_notes", "can_send_polls",
                  "can_send_other_messages", "can_add_web_page_previews", "can_change_info",
                  "can_invite_users", "can_pin_messages", "can_manage_topics", "can_edit_tag")  # fmt: skip
        data.update({right: False for right in rights}, is_member=True, until_date=0)
    elif status == "kicked":
        data["until_date"] = 0
    return data


class ApiError(Exception):
    """An error answer: HTTP status = ``error_code``, as Telegram does."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class FakeChat:
    """A chat as the fake knows it; ``state`` decides how sendMessage answers."""

    id: int | str
    type: str  # private | group | supergroup | channel
    state: str = "ok"  # ok | blocked | deactivated | kicked | migrated
    title: str | None = None
    first_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    migrate_to: int | None = None
    #: A group's or channel's members by user id, with their ``ChatMember.status``.
    members: dict[int, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or "Warga"
        else:
            data["title"] = self.title or f"Chat {self.id}"
        if self.username:
            data["username"] = self.username.lstrip("@")
        return data


@dataclass
class SentMessage:
    """One accepted sendMessage, as the recipient would see it."""

    message_id: int
    chat_id: int | str
    text: str  # the raw text as sent (HTML source when parse_mode is HTML)
    visible_text: str  # what the user sees (tags removed, entities decoded)
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    params: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


class _Window:
    """A sliding window: at most ``count`` events within ``period`` seconds."""

    def __init__(self, count: float, period: float) -> None:
        self.count = count
        self.period = period
        self.events: deque[float] = deque()

    def retry_after(self, now: float) -> int:
        """0 if one more event fits now, else the whole seconds to wait (Telegram sends integers)."""
        while self.events and self.events[0] <= now - self.period:
            self.events.popleft()
        if len(self.events) < self.count:
            return 0
        oldest = self.events[len(self.events) - int(self.count)]
        return max(1, math.ceil(oldest + self.period - now))

    def add(self, now: float) -> None:
        self.events.append(now)


# --------------------------------------------------------------------------------------------------------
# Minimal HTML parse-mode validation, with Telegram's wording

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^<>]*)?)>")
_ENTITY = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);")


def parse_html(text: str) -> str:
    """Return the visible text of Telegram HTML, or raise 400 "can't parse entities" like Telegram."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            offset = len(text[:i].encode())
            if not m:
                raise ApiError(400, f"{CANT_PARSE}Unexpected start tag at byte offset {offset}")
            closing, name = m.group(1) == "/", m.group(2).lower()
            if name not in SUPPORTED_TAGS:
                raise ApiError(
                    400,
                    f'{CANT_PARSE}Unsupported start tag "{name}" at byte offset {offset}',
                )
            if closing:
                if not stack or stack[-1] != name:
                    expected = f', expected "</{stack[-1]}>"' if stack else ""
                    raise ApiError(
                        400,
                        f'{CANT_PARSE}Unmatched end tag at byte offset {offset}{expected}, found "</{name}>"',
                    )
                stack.pop()
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if m and m.group(1).startswith("#"):
                out.append(html.unescape(m.group(0)))
                i = m.end()
            elif m and m.group(1) in NAMED_ENTITIES:
                out.append(NAMED_ENTITIES[m.group(1)])
                i = m.end()
            elif m:
                offset = len(text[:i].encode())
                raise ApiError(400, f"{CANT_PARSE}Unsupported HTML entity at byte offset {offset}")
            else:
                out.append("&")
                i += 1
        elif ch == ">":
            out.append(">")
            i += 1
        else:
            out.append(ch)
            i += 1
    if stack:
        raise ApiError(
            400,
            f'{CANT_PARSE}Can\'t find end tag corresponding to start tag "{stack[-1]}"',
        )
    return "".join(out)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------------------
# The server


class FakeTelegram(ThreadedServer):
    """The fake Bot API. Configure chats, inject updates, then read what was sent and refused."""

    thread_name = "fake-telegram"

    def __init__(
        self,
        *,
        token: str = "123456789:AAFakeTokenForLoopbackTestsOnly_abcdef",
        bot_username: str = "disdukcapil_test_bot",
        overall_per_second: float = 30,
        per_chat_per_second: float = 1,
        group_per_minute: float = 20,
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self._lock = threading.RLock()
        self._limits = (overall_per_second, per_chat_per_second, group_per_minute)
        self._overall = _Window(overall_per_second, 1.0)
        self._chat_windows: dict[str, _Window] = {}
        self._chats: dict[str, FakeChat] = {}
        self._messages: list[SentMessage] = []
        self._next_message_id = 1
        self._next_update_id = 1
        self._next_user_id = 5_000_000
        self._updates: list[dict[str, Any]] = []
        self._callbacks: dict[str, dict[str, Any]] = {}
        self.answered_callbacks: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, int, str]] = []
        self.too_many_requests = 0
        #: Seconds (lowest, highest) a sendMessage takes to reach the counter, drawn at random per
        #: request: the varying gap between a client's decision to send and Telegram counting it (event
        #: loop, HTTP stack, network), which spacing alone cannot control.
        self.arrival_delay: tuple[float, float] = (0.0, 0.0)
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status or 0 on error)
        self._forced: list[tuple[str | None, str, ApiError, list[int]]] = []
        self._storm: tuple[str, float, int | None] | None = None  # (method, ends at, fixed retry_after)
        self._outage: tuple[str, float, int] | None = None  # (method, ends at, HTTP status)
        #: Every 429 answered: (answered at, until), ``time.monotonic()``; the bot is held until then.
        self.holds: list[tuple[float, float]] = []
        #: sendMessage calls that arrived while a 429 held the bot: (arrived at, 429 answered at, until).
        self.early: list[tuple[float, float, float]] = []
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._new_update: asyncio.Condition | None = None
        self._webhook_queue: asyncio.Queue[dict[str, Any]] | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """What to pass as PTB's ``base_url`` (PTB appends the token)."""
        return f"{self.url}/bot"

    def _probe(self) -> None:
        wait_for_json(f"{self.base_url}{self.token}/getMe", lambda answer: answer["ok"])

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        self._new_update = asyncio.Condition()
        self._webhook_queue = asyncio.Queue()
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._webhook_task = asyncio.get_running_loop().create_task(self._deliver_webhooks())

    async def _shutdown(self) -> None:
        """End pending long polls first, so that closing the server does not wait for them."""
        self._closing = True
        await self._notify()
        self._webhook_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------------------ configuration

    def set_overall_rate(self, per_second: float) -> None:
        """E.g. 1000 for a bot with paid broadcasts enabled."""
        self.set_limits(overall_per_second=per_second)

    def set_limits(
        self,
        *,
        overall_per_second: float | None = None,
        per_chat_per_second: float | None = None,
        group_per_minute: float | None = None,
    ) -> None:
        with self._lock:
            overall, chat, group = self._limits
            self._limits = (
                overall if overall_per_second is None else overall_per_second,
                chat if per_chat_per_second is None else per_chat_per_second,
                group if group_per_minute is None else group_per_minute,
            )
            self._overall = _Window(self._limits[0], 1.0)
            self._chat_windows.clear()

    def _add(self, chat: FakeChat) -> FakeChat:
        with self._lock:
            self._chats[str(chat.id)] = chat
            if chat.username:
                self._chats["@" + chat.username.lstrip("@").lower()] = chat
        return chat

    def add_private(self, user_id: int, *, first_name: str = "Warga", language_code: str = "id") -> FakeChat:
        """A citizen who started the bot; the chat id is the user id."""
        return self._add(FakeChat(user_id, "private", first_name=first_name, language_code=language_code))

    def add_blocked(self, user_id: int) -> FakeChat:
        """A user who blocked the bot: 403 "Forbidden: bot was blocked by the user"."""
        chat = self.add_private(user_id)
        chat.state = "blocked"
        return chat

    def add_deactivated(self, user_id: int) -> FakeChat:
        """A deleted account: 403 "Forbidden: user is deactivated"."""
        chat = self.add_private(user_id)
        chat.state = "deactivated"
        return chat

    def block(self, user_id: int) -> None:
        with self._lock:
            self._chats[str(user_id)].state = "blocked"

    def unblock(self, user_id: int) -> None:
        with self._lock:
            self._chats[str(user_id)].state = "ok"

    def add_group(
        self,
        chat_id: int,
        *,
        title: str = "Kelurahan",
        supergroup: bool = False,
        creator: int | None = None,
        admins: tuple[int, ...] = (),
    ) -> FakeChat:
        """A group; ``creator`` and ``admins`` are the users getChatMember reports as its managers."""
        chat = self._add(FakeChat(chat_id, "supergroup" if supergroup else "group", title=title))
        for admin in admins:
            self.set_member(chat_id, admin, "administrator")
        if creator is not None:
            self.set_member(chat_id, creator, "creator")
        return chat

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """A user's status in a group (promoted, demoted, left, banned): one of ``MEMBER_STATUSES``."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown chat member status {status!r}")
        with self._lock:
            self._chats[str(chat_id)].members[int(user_id)] = status

    def _wrote(self, chat_id: int | str, user_id: int | None) -> None:
        """Someone who writes in a group is in it: a member, unless the group says more."""
        with self._lock:
            chat = self._chats.get(str(chat_id))
            if chat is None or chat.type == "private" or user_id is None:
                return
            if chat.members.get(user_id) in (None, "left"):
                chat.members[user_id] = "member"

    def add_migrated_group(self, chat_id: int, new_chat_id: int, *, title: str = "Kelurahan") -> FakeChat:
        """A group that became a supergroup: 400 with ``parameters.migrate_to_chat_id``."""
        self.add_group(new_chat_id, title=title, supergroup=True)
        chat = self.add_group(chat_id, title=title)
        chat.state = "migrated"
        chat.migrate_to = new_chat_id
        return chat

    def add_kicked_group(self, chat_id: int, *, title: str = "Kelurahan") -> FakeChat:
        """403 "Forbidden: bot was kicked from the group chat"."""
        chat = self.add_group(chat_id, title=title)
        chat.state = "kicked"
        return chat

    def add_channel(self, chat_id: int, *, username: str | None = None, title: str = "Info") -> FakeChat:
        """A channel the bot posts in; reachable by id and by ``@username``."""
        return self._add(FakeChat(chat_id, "channel", title=title, username=username))

    def force_error(
        self,
        code: int,
        description: str,
        *,
        chat_id: int | str | None = None,
        method: str = "sendMessage",
        times: int = 1,
        skip: int = 0,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer ``times`` calls of ``method`` (to ``chat_id``, if given) with this error, after letting
        ``skip`` matching calls through normally."""
        with self._lock:
            key = None if chat_id is None else str(chat_id)
            self._forced.append((key, method, ApiError(code, description, parameters), [skip, times]))

    def force_flood(
        self, retry_after: int, *, chat_id: int | str | None = None, times: int = 1, skip: int = 0
    ) -> None:
        """A 429 "Too Many Requests: retry after N" regardless of the windows (counted as a 429)."""
        self.force_error(
            429,
            f"Too Many Requests: retry after {retry_after}",
            chat_id=chat_id,
            times=times,
            skip=skip,
            parameters={"retry_after": retry_after},
        )

    def storm(
        self, seconds: float, *, retry_after: int | None = None, method: str = "sendMessage"
    ) -> tuple[float, float]:
        """Flood control for the next ``seconds``: every ``method`` call is answered 429, whatever the
        windows say (counted in ``too_many_requests``), as Telegram holds a bot that tripped its limits.

        ``retry_after`` is the whole seconds left of the storm by default; a smaller fixed value makes a
        client that obeys it meet the storm again, as it does when Telegram extends a flood wait.
        Returns the storm's start and end on ``time.monotonic()``, the clock of ``SentMessage.at``.
        """
        with self._lock:
            start = time.monotonic()
            self._storm = (method.lower(), start + seconds, retry_after)
        return start, start + seconds

    def outage(self, seconds: float, *, code: int = 503, method: str = "sendMessage") -> None:
        """For the next ``seconds`` every ``method`` call is answered ``code`` (502/503/504: Telegram's
        own trouble, as during its outages), before the call is counted or a message kept."""
        with self._lock:
            self._outage = (method.lower(), time.monotonic() + seconds, code)

    def violations(self, grace: float = 0.0) -> list[tuple[float, float, float]]:
        """sendMessage calls that came more than ``grace`` seconds after a 429 and before its
        ``retry_after`` ran out: (arrived at, 429 answered at, until). ``grace`` spares the calls already
        under way when the 429 was answered (another worker's, or a task that had its turn already)."""
        with self._lock:
            return [e for e in self.early if e[0] - e[1] > grace]

    def _note_arrival(self, now: float) -> None:
        """Called with the lock held: a sendMessage arriving inside a hold is recorded as early."""
        self.holds = [h for h in self.holds if h[1] > now - 60]
        for answered, until in self.holds:
            if answered < now < until:
                self.early.append((now, answered, until))
                return

    # ------------------------------------------------------------------------------------ reading results

    def messages(self, chat_id: int | str | None = None) -> list[SentMessage]:
        """Accepted messages in order, for one chat or all."""
        with self._lock:
            if chat_id is None:
                return list(self._messages)
            chat = self._chats.get(str(chat_id))
            key = chat.id if chat else chat_id
            return [m for m in self._messages if str(m.chat_id) == str(key)]

    def texts(self, chat_id: int | str) -> list[str]:
        return [m.text for m in self.messages(chat_id)]

    def errors_for(self, method: str = "sendMessage") -> list[tuple[int, str]]:
        with self._lock:
            return [(code, desc) for m, code, desc in self.errors if m == method]

    # ------------------------------------------------------------------------------------ injecting updates

    def _user(self, user_id: int | None, language_code: str | None) -> dict[str, Any]:
        with self._lock:
            chat = self._chats.get(str(user_id)) if user_id is not None else None
            if user_id is None:
                self._next_user_id += 1
                user_id = self._next_user_id
        data: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": "Warga"}
        code = language_code or (chat.language_code if chat else None)
        if code:
            data["language_code"] = code
        return data

    def _chat_json(self, chat_id: int | str) -> dict[str, Any]:
        with self._lock:
            chat = self._chats.get(str(chat_id))
        if chat is None:
            kind = "private" if isinstance(chat_id, int) and chat_id > 0 else "group"
            chat = FakeChat(chat_id, kind)
        return chat.as_json()

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Disdukcapil", "username": self.bot_username}

    def inject_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (``update_id`` is assigned); getUpdates returns it, or it is POSTed to the
        webhook if one is set."""
        with self._lock:
            update = {"update_id": self._next_update_id, **update}
            self._next_update_id += 1
            self._updates.append(update)
            webhook = self.webhook_url is not None
        loop = self._loop
        if loop is not None:
            if webhook:
                loop.call_soon_threadsafe(self._webhook_queue.put_nowait, update)  # type: ignore[union-attr]
            else:
                asyncio.run_coroutine_threadsafe(self._notify(), loop)
        return update

    async def _notify(self) -> None:
        assert self._new_update is not None
        async with self._new_update:
            self._new_update.notify_all()

    def inject_message(
        self,
        chat_id: int,
        text: str,
        *,
        from_id: int | None = None,
        language_code: str | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """A text (or "/command") a user wrote; in a private chat the sender defaults to the chat.

        ``anonymous``: an anonymous administrator of a group wrote it, as the group itself (``from`` is
        GroupAnonymousBot and ``sender_chat`` the group, as Telegram sends it).
        """
        chat = self._chat_json(chat_id)
        if from_id is None and chat["type"] == "private":
            from_id = int(chat_id)
        message: dict[str, Any] = {
            "message_id": self._take_message_id(),
            "date": int(time.time()),
            "chat": chat,
            "text": text,
        }
        if chat["type"] == "channel":
            return self.inject_update({"channel_post": message})
        if anonymous:
            message["from"], message["sender_chat"] = dict(GROUP_ANONYMOUS_BOT), chat
        else:
            message["from"] = self._user(from_id, language_code)
            self._wrote(chat_id, message["from"]["id"])
        if text.startswith("/"):
            length = len(text.split()[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(text[:length])}]
        return self.inject_update({"message": message})

    inject_command = inject_message

    def inject_callback(
        self,
        chat_id: int,
        data: str,
        *,
        from_id: int | None = None,
        message_id: int | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """A press on an inline button of message ``message_id`` (default: the chat's last message)."""
        chat = self._chat_json(chat_id)
        if from_id is None and chat["type"] == "private":
            from_id = int(chat_id)
        if message_id is None:
            sent = self.messages(chat_id)
            message_id = sent[-1].message_id if sent else self._take_message_id()
        with self._lock:
            query_id = str(10_000_000 + self._next_update_id)
            self._callbacks[query_id] = {"answered": False}
        user = self._user(from_id, language_code)
        self._wrote(chat_id, user["id"])
        query = {
            "id": query_id,
            "from": user,
            "chat_instance": str(chat_id),
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": chat,
                "from": self._bot_user(),
                "text": "…",
            },
        }
        return self.inject_update({"callback_query": query})

    def inject_my_chat_member(
        self,
        chat_id: int,
        status: str = "member",
        *,
        from_id: int | None = None,
        old_status: str | None = None,
    ) -> dict[str, Any]:
        """The bot's own membership changed: ``member``/``administrator`` (added), ``left``/``kicked``."""
        old = old_status or ("left" if status in ("member", "administrator") else "member")
        change = {
            "chat": self._chat_json(chat_id),
            "from": self._user(from_id, None),
            "date": int(time.time()),
            "old_chat_member": member_json(self._bot_user(), old),
            "new_chat_member": member_json(self._bot_user(), status),
        }
        return self.inject_update({"my_chat_member": change})

    def inject_new_chat_members(
        self, chat_id: int, *, include_bot: bool = True, from_id: int | None = None
    ) -> dict:
        """The service message Telegram sends alongside my_chat_member when the bot joins a group."""
        members = [self._bot_user()] if include_bot else [self._user(None, None)]
        message = {
            "message_id": self._take_message_id(),
            "date": int(time.time()),
            "chat": self._chat_json(chat_id),
            "from": self._user(from_id, None),
            "new_chat_members": members,
            "new_chat_member": members[0],
            "new_chat_participant": members[0],
        }
        return self.inject_update({"message": message})

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        with self._lock:
            return list(self._updates)

    def _take_message_id(self) -> int:
        with self._lock:
            value = self._next_message_id
            self._next_message_id += 1
            return value

    # ------------------------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return self._error_response(method, ApiError(401, "Unauthorized"))
        try:
            params = await self._params(request)
        except ApiError as exc:
            return self._error_response(method, exc)
        with self._lock:
            self.calls.append((method, params))
            if method.lower() == "sendmessage":
                self._note_arrival(time.monotonic())
        handler: Callable[[dict[str, Any]], Any] | None = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return self._error_response(method, ApiError(404, "Not Found"))
        low, high = self.arrival_delay
        if high > 0 and method.lower() == "sendmessage":
            await asyncio.sleep(random.uniform(low, high))
        try:
            self._check_forced(method, params)
            result = handler(params)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as exc:
            return self._error_response(method, exc)
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        """JSON bodies, form bodies (how PTB sends, nested values JSON-encoded) and the query string."""
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise ApiError(400, "Bad Request: can't parse JSON") from exc
                params.update(body)
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        for key in ("reply_markup", "allowed_updates", "link_preview_options", "reply_parameters"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError as exc:
                    raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from exc
        return params

    def _error_response(self, method: str, exc: ApiError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        with self._lock:
            self.errors.append((method, exc.code, exc.description))
            if exc.code == 429:
                self.too_many_requests += 1
                wait = (exc.parameters or {}).get("retry_after")
                if wait:
                    now = time.monotonic()
                    self.holds.append((now, now + float(wait)))
        return web.json_response(body, status=exc.code)

    def _check_forced(self, method: str, params: dict[str, Any]) -> None:
        with self._lock:
            outage = self._outage
            if outage is not None and outage[0] == method.lower() and outage[1] > time.monotonic():
                code = outage[2]
                raise ApiError(
                    code, {502: "Bad Gateway", 504: "Gateway Timeout"}.get(code, "Service Unavailable")
                )
            if self._storm is not None and self._storm[0] == method.lower():
                left = self._storm[1] - time.monotonic()
                if left > 0:
                    wait = self._storm[2] or max(1, math.ceil(left))
                    raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            for entry in self._forced:
                chat_key, forced_method, error, counters = entry
                if forced_method != method or counters[1] <= 0:
                    continue
                if chat_key is not None and str(params.get("chat_id")) != chat_key:
                    continue
                if counters[0] > 0:
                    counters[0] -= 1
                    continue
                counters[1] -= 1
                raise error

    def _chat_for(self, params: dict[str, Any]) -> FakeChat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        key = str(raw).lower() if str(raw).startswith("@") else str(raw)
        chat = self._chats.get(key)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    # ------------------------------------------------------------------------------------ methods

    def _m_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _m_getchat(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            chat = self._chat_for(params)
            if chat.state == "kicked":
                raise ApiError(403, "Forbidden: bot was kicked from the group chat")
            return {**chat.as_json(), "accent_color_id": 0, "max_reaction_count": 11}

    def _managed_chat(self, params: dict[str, Any]) -> FakeChat:
        chat = self._chat_for(params)
        if chat.state == "kicked":
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        if chat.state == "migrated":
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrate_to},
            )
        return chat

    def _m_getchatmember(self, params: dict[str, Any]) -> dict[str, Any]:
        """A user's ChatMember: "left" for anyone the chat does not know, as Telegram answers."""
        raw = str(params.get("user_id", ""))
        if not raw.lstrip("-").isdigit() or int(raw) <= 0:
            raise ApiError(400, "Bad Request: invalid user_id specified")
        user_id = int(raw)
        with self._lock:
            chat = self._managed_chat(params)
            if user_id == self.bot_id:
                return member_json(self._bot_user(), "member")
            if chat.type == "private":
                status = "member" if str(chat.id) == raw else "left"
            else:
                status = chat.members.get(user_id, "left")
        return member_json(self._user(user_id, None), status)

    def _m_getchatadministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The creator and administrators (no other bots here); none in a private chat."""
        with self._lock:
            chat = self._managed_chat(params)
            if chat.type == "private":
                raise ApiError(400, "Bad Request: there are no administrators in the private chat")
            admins = [(u, s) for u, s in chat.members.items() if s in ("creator", "administrator")]
        return [member_json(self._user(user_id, None), status) for user_id, status in admins]

    def _m_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode")
        visible = parse_html(text) if str(parse_mode).lower() == "html" else text
        if not visible.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(visible) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        if markup is not None:
            self._check_markup(markup)
        paid = str(params.get("allow_paid_broadcast", "")).lower() == "true"
        with self._lock:
            chat = self._chat_for(params)
            if chat.state == "blocked":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if chat.state == "deactivated":
                raise ApiError(403, "Forbidden: user is deactivated")
            if chat.state == "kicked":
                raise ApiError(403, "Forbidden: bot was kicked from the group chat")
            if chat.state == "migrated":
                raise ApiError(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": chat.migrate_to},
                )
            now = time.monotonic()
            window = self._window_for(chat)
            wait = max(self._overall.retry_after(now), window.retry_after(now))
            if wait:
                raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            self._overall.add(now)
            window.add(now)
            message_id = self._next_message_id
            self._next_message_id += 1
            self._messages.append(
                SentMessage(
                    message_id, chat.id, text, visible, parse_mode, markup, dict(params, paid=paid), now
                )
            )
            result: dict[str, Any] = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": chat.as_json(),
                "text": visible,
            }
            if chat.type != "channel":
                result["from"] = self._bot_user()
            if markup is not None:
                result["reply_markup"] = markup
            return result

    def _window_for(self, chat: FakeChat) -> _Window:
        key = str(chat.id)
        window = self._chat_windows.get(key)
        if window is None:
            _, per_chat, per_group = self._limits
            window = _Window(per_chat, 1.0) if chat.type == "private" else _Window(per_group, 60.0)
            self._chat_windows[key] = window
        return window

    @staticmethod
    def _check_markup(markup: Any) -> None:
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list):
            raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise ApiError(
                        400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed"
                    )
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if data is None and not button.get("url"):
                    raise ApiError(
                        400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed"
                    )

    async def _m_getupdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook_url is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                "the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        allowed = params.get("allowed_updates") or None

        def ready() -> list[dict[str, Any]]:
            with self._lock:
                if offset:
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                found = [u for u in self._updates if not allowed or any(k in u for k in allowed)]
                return found[:limit]

        assert self._new_update is not None
        deadline = time.monotonic() + timeout
        async with self._new_update:
            while True:
                found = ready()
                left = deadline - time.monotonic()
                if found or left <= 0 or self._closing:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), min(left, 0.5))

    def _m_setwebhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url") or ""
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        with self._lock:
            if not url:
                self.webhook_url = self.webhook_secret = None
                return True
            if not url.startswith(("http://127.0.0.1", "https://")):
                raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
            self.webhook_url, self.webhook_secret = url, secret
            if str(params.get("drop_pending_updates", "")).lower() == "true":
                self._updates.clear()
            pending = list(self._updates)
        for update in pending:
            self._webhook_queue.put_nowait(update)  # type: ignore[union-attr]
        return True

    def _m_deletewebhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self.webhook_url = self.webhook_secret = None
            if str(params.get("drop_pending_updates", "")).lower() == "true":
                self._updates.clear()
        return True

    def _m_getwebhookinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {
                "url": self.webhook_url or "",
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }

    def _m_answercallbackquery(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        with self._lock:
            state = self._callbacks.get(query_id)
            if state is None or state["answered"]:
                raise ApiError(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            state["answered"] = True
            self.answered_callbacks.append(params)
        return True

    # ------------------------------------------------------------------------------------ webhook delivery

    async def _deliver_webhooks(self) -> None:
        """POST queued updates to the webhook, one at a time and in order, like Telegram."""
        assert self._webhook_queue is not None
        async with ClientSession(timeout=ClientTimeout(total=5)) as session:
            while True:
                update = await self._webhook_queue.get()
                with self._lock:
                    url, secret = self.webhook_url, self.webhook_secret
                    still_pending = any(u is update for u in self._updates)
                if url is None or not still_pending:
                    continue
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
                try:
                    async with session.post(url, json=update, headers=headers) as resp:
                        status = resp.status
                except Exception:
                    status = 0
                with self._lock:
                    self.webhook_deliveries.append((update["update_id"], status))
                    if 200 <= status < 300:
                        self._updates = [u for u in self._updates if u is not update]


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Await until ``predicate()`` is truthy (the fake runs in another thread); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
