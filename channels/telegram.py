"""Telegram adapter on python-telegram-bot's ``Bot`` (no ``Application``: the hub owns the loop).

Limits are not enforced here but declared to the shared pacer (DESIGN.md rule 5); Telegram's own errors
are mapped onto the five outcomes of ``channels.base`` (rule 6). Long texts are split into numbered
parts because Telegram caps a message at 4096 characters after entity parsing.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import os
import re
import time
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

# Opt in to PTB's future ``timedelta`` time periods now: otherwise every ``RetryAfter`` warns.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from telegram import Bot, Chat, ChatMember, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from channels.base import (
    Channel,
    Content,
    EndpointKind,
    Inbound,
    InboundSink,
    InvalidAddress,
    Lane,
    Moved,
    NoPacing,
    Outbound,
    Outcome,
    Pacer,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 4096
#: Room kept in every part of a split text for its "(12/34) " number.
_PART_NUMBER_RESERVE = 12
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: The hub's webhook route for this channel (``hub/api``: ``/v1/channels/{channel}/webhook``).
DEFAULT_WEBHOOK_PATH = "/v1/channels/telegram/webhook"
ALLOWED_UPDATES = ("message", "channel_post", "callback_query", "my_chat_member")

# Permanent failures: the endpoint will never accept a message again (Telegram Bot FAQ, FACTS.md).
_GONE_FORBIDDEN = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot was kicked",
    "bot can't initiate conversation",
    "bot is not a member",
    "bot can't send messages to bots",
)
_GONE_BAD_REQUEST = ("chat not found", "user not found", "group chat was deactivated", "peer_id_invalid")

_ADDRESS_ID = re.compile(r"-?[1-9][0-9]{0,18}")
_ADDRESS_NAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _truthy(value: Any) -> bool:
    """Settings may come from TOML (bool) or from environment overrides (str)."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _utf16_len(text: str) -> int:
    """Telegram counts text in UTF-16 code units (an emoji outside the BMP counts as two)."""
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------------------
# HTML handling: tokenise once, split on visible-text boundaries, re-balance tags per part

_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?>")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]»]*\s")


@dataclass(frozen=True, slots=True)
class _Unit:
    """One indivisible piece of Telegram HTML: a tag, an entity, or one character."""

    raw: str
    text: str = ""
    tag: str = ""
    closing: bool = False


def _tokenize(source: str) -> list[_Unit]:
    """Split HTML into units; a stray ``<`` or ``&`` is escaped so Telegram cannot choke on it."""
    units: list[_Unit] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "<":
            m = _TAG.match(source, i)
            if m:
                units.append(_Unit(m.group(0), tag=m.group(1).lower(), closing=m.group(0).startswith("</")))
                i = m.end()
                continue
            units.append(_Unit("&lt;", text="<"))
        elif ch == "&":
            m = _ENTITY.match(source, i)
            if m:
                units.append(_Unit(m.group(0), text=html.unescape(m.group(0))))
                i = m.end()
                continue
            units.append(_Unit("&amp;", text="&"))
        elif ch == ">":
            units.append(_Unit("&gt;", text=">"))
        else:
            units.append(_Unit(ch, text=ch))
        i += 1
    return units


def _is_space(unit: _Unit) -> bool:
    return bool(unit.text) and unit.text.isspace()


def _choose_cut(units: list[_Unit], start: int, end: int) -> int:
    """Where the next part starts: the last paragraph, else sentence, else word break before ``end``."""
    chars: list[str] = []
    owner: list[int] = []
    for k in range(start, end):
        for ch in units[k].text:
            chars.append(ch)
            owner.append(k)
    visible = "".join(chars)
    # A paragraph or sentence break only counts if it keeps the part reasonably full.
    min_pos = max(1, len(visible) // 3)
    p = visible.rfind("\n\n")
    if p >= min_pos:
        return owner[p]
    last_sentence = None
    for m in _SENTENCE_END.finditer(visible):
        last_sentence = m
    if last_sentence is not None and last_sentence.end() - 1 >= min_pos:
        return owner[last_sentence.end() - 1]
    for p in range(len(visible) - 1, 0, -1):
        if visible[p].isspace():
            return owner[p]
    return end


def _split_ranges(units: list[_Unit], budget: int) -> list[tuple[int, int]]:
    """Unit ranges whose visible text each fits ``budget`` UTF-16 units."""
    widths = [_utf16_len(u.text) for u in units]
    ranges: list[tuple[int, int]] = []
    n = len(units)
    start = 0
    while start < n and _is_space(units[start]):
        start += 1
    while start < n:
        acc, end = 0, start
        while end < n and acc + widths[end] <= budget:
            acc += widths[end]
            end += 1
        if end >= n:
            while n > start and _is_space(units[n - 1]):
                n -= 1
            ranges.append((start, n))
            break
        cut = _choose_cut(units, start, end)
        stop = cut
        while stop > start and _is_space(units[stop - 1]):
            stop -= 1
        if stop <= start:  # nothing but spaces before the break: cut hard instead
            cut = stop = max(end, start + 1)
        ranges.append((start, stop))
        start = cut
        while start < n and _is_space(units[start]):
            start += 1
    return [(s, e) for s, e in ranges if any(u.text.strip() for u in units[s:e])]


def _render(units: list[_Unit], ranges: list[tuple[int, int]]) -> list[str]:
    """Render each range as valid HTML: tags open at a cut are closed and re-opened in the next part."""
    stack: list[_Unit] = []
    parts: list[str] = []

    def apply(unit: _Unit, out: list[str] | None) -> None:
        if not unit.closing:
            stack.append(unit)
            if out is not None:
                out.append(unit.raw)
            return
        idx = next((k for k in range(len(stack) - 1, -1, -1) if stack[k].tag == unit.tag), None)
        if idx is None:
            return  # a stray end tag would make Telegram reject the message: drop it
        if out is not None:
            out.extend(f"</{inner.tag}>" for inner in reversed(stack[idx + 1 :]))
            out.append(unit.raw)
        del stack[idx:]

    pos = 0
    for start, end in ranges:
        for unit in units[pos:start]:  # skipped spaces between parts; tags there still count
            if unit.tag:
                apply(unit, None)
        out = [u.raw for u in stack]
        for unit in units[start:end]:
            if unit.tag:
                apply(unit, out)
            else:
                out.append(unit.raw)
        out.extend(f"</{u.tag}>" for u in reversed(stack))
        parts.append("".join(out))
        pos = end
    return parts


def split_html(source: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Split Telegram HTML into messages of at most ``limit`` visible characters, numbered "(1/3) "."""
    return list(_split_cached(source, limit))


@lru_cache(maxsize=256)
def _split_cached(source: str, limit: int) -> tuple[str, ...]:
    """A broadcast hands every recipient the same text: tokenise it once per process, not per chat."""
    units = _tokenize(source)
    if sum(_utf16_len(u.text) for u in units) <= limit:
        return tuple(_render(units, [(0, len(units))]))
    parts = _render(units, _split_ranges(units, limit - _PART_NUMBER_RESERVE))
    total = len(parts)
    return tuple(f"({i}/{total}) {part}" for i, part in enumerate(parts, start=1))


def content_html(content: Content) -> str:
    """The HTML to send: the hub's HTML, or the plain text escaped."""
    return content.html if content.html is not None else html.escape(content.text, quote=False)


def visible_text(source: str) -> str:
    """The text Telegram shows for ``source`` (tags removed, entities decoded)."""
    return "".join(u.text for u in _tokenize(source))


# --------------------------------------------------------------------------------------------------------
# Error mapping


def _retry_after_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` warns while PTB migrates it to ``timedelta``; accept both forms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def classify_error(exc: TelegramError) -> Outcome:
    """Map a PTB exception (other than ``RetryAfter``) onto an outcome; messages vary in case."""
    message = exc.message
    lowered = message.lower()
    if isinstance(exc, ChatMigrated):
        return Moved(str(exc.new_chat_id))
    if isinstance(exc, Forbidden):
        if any(phrase in lowered for phrase in _GONE_FORBIDDEN):
            return RecipientGone(message)
        return Rejected(message)
    if isinstance(exc, BadRequest):  # before NetworkError: BadRequest subclasses it
        if any(phrase in lowered for phrase in _GONE_BAD_REQUEST):
            return RecipientGone(message)
        return Rejected(message)
    if isinstance(exc, InvalidToken):
        return RetryLater(f"bot token refused: {message}")
    if isinstance(exc, NetworkError):  # includes TimedOut and HTTP 5xx
        return RetryLater(message)
    return Rejected(message)


def _present(member: ChatMember) -> bool:
    """Whether a chat member (here: the bot) is in the chat; restricted members may or may not be."""
    if member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR, ChatMember.OWNER):
        return True
    return member.status == ChatMember.RESTRICTED and bool(getattr(member, "is_member", False))


def _is_transient(exc: TelegramError) -> bool:
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _rate(key: str, count: float, period: float, margin: float) -> Rate:
    """``count`` per ``period``; with a margin, that much slower."""
    if margin <= 0:
        return Rate(key, count, period)
    return Rate(key, count, period * (1.0 + margin))


# --------------------------------------------------------------------------------------------------------
# Transport


class AiohttpRequest(BaseRequest):
    """PTB's HTTP transport on aiohttp instead of httpx.

    Measured here (benchmarks/telegram.py, docs/benchmarks.md): PTB on httpx managed about 300
    sendMessage calls a second per process, and fewer the more calls were in flight at once (about 100/s
    with 16 waiting on a pool of 4), where aiohttp sends thousands. At 30/s either will do; a paid
    broadcast at up to 1000/s needs this. Errors map as PTB's own transport maps them.
    """

    __slots__ = ("_connections", "_session", "_timeout")

    def __init__(self, connections: int = 8, timeout: float = 10.0) -> None:
        self._connections = connections
        self._timeout = timeout
        self._session: Any = None

    @property
    def read_timeout(self) -> float | None:
        return self._timeout

    async def initialize(self) -> None:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        import aiohttp

        if self._session is None:
            raise RuntimeError("This AiohttpRequest is not initialized!")

        def pick(value: Any) -> float | None:
            # PTB passes its DefaultValue sentinel when the caller gave no timeout.
            return value if value is None or isinstance(value, int | float) else self._timeout

        read, connect, pool = pick(read_timeout), pick(connect_timeout), pick(pool_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        data: Any = None
        if request_data is not None and request_data.contains_files:
            form = aiohttp.FormData()
            for name, value in request_data.multipart_data.items():
                if isinstance(value, tuple):
                    filename, content, mimetype = (*value, None)[:3]
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                else:
                    form.add_field(name, value)
            data = form
        elif request_data is not None:
            data = request_data.json_parameters
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err


def _make_request(client: str, connections: int, timeout: float) -> BaseRequest:
    if client == "aiohttp":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            log.warning("telegram: aiohttp is not installed; sending through httpx")
        else:
            return AiohttpRequest(connections=connections, timeout=timeout)
    return HTTPXRequest(
        connection_pool_size=connections,
        read_timeout=timeout,
        write_timeout=timeout,
        connect_timeout=timeout,
        pool_timeout=timeout,
    )


# --------------------------------------------------------------------------------------------------------
# The adapter


class TelegramChannel(Channel):
    """Sends through the Bot API; receives by webhook or long polling."""

    name = "telegram"
    batch_size = 100
    supports_buttons = True

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        rate_per_second: float = 30,
        per_chat_per_second: float = 1,
        group_per_minute: float = 20,
        paid_broadcast: bool = False,
        paid_rate_per_second: float = 1000,
        webhook_secret: str | None = None,
        mode: str = "polling",
        public_url: str = "",
        webhook_path: str = DEFAULT_WEBHOOK_PATH,
        username: str | None = None,
        safety_margin: float = 0.0,
        chat_safety_margin: float = 0.0,
        pacing_waiters: int = 8,
        http_client: str = "aiohttp",
        connections: int = 8,
        concurrency: int = 32,
        poll_timeout: int = 30,
        max_inline_wait: float = 60.0,
        request_timeout: float = 10.0,
    ) -> None:
        if not token:
            raise ValueError("telegram: token is required")
        if mode not in ("polling", "webhook"):
            raise ValueError(f"telegram: mode must be 'polling' or 'webhook', not {mode!r}")
        if webhook_secret is not None and not _SECRET_TOKEN.fullmatch(webhook_secret):
            raise ValueError("telegram: webhook_secret must be 1-256 characters of A-Z a-z 0-9 _ -")
        if mode == "webhook" and not webhook_secret:
            raise ValueError("telegram: webhook mode needs a webhook_secret")
        self.token = token
        self.base_url = base_url
        self.rate_per_second = float(paid_rate_per_second if paid_broadcast else rate_per_second)
        self.per_chat_per_second = float(per_chat_per_second)
        self.group_per_minute = float(group_per_minute)
        self.paid_broadcast = paid_broadcast
        self.webhook_secret = webhook_secret
        self.mode = mode
        self.public_url = public_url
        self.webhook_path = webhook_path
        if safety_margin < 0 or chat_safety_margin < 0:
            raise ValueError("telegram: safety margins must not be negative")
        self.safety_margin = float(safety_margin)
        self.chat_safety_margin = float(chat_safety_margin)
        self.pacing_waiters = max(1, int(pacing_waiters))
        if http_client not in ("aiohttp", "httpx"):
            raise ValueError(f"telegram: http_client must be 'aiohttp' or 'httpx', not {http_client!r}")
        self.http_client = http_client
        self.connections = max(1, int(connections))
        self.concurrency = max(1, int(concurrency))
        self.poll_timeout = int(poll_timeout)
        self.max_inline_wait = float(max_inline_wait)
        # The bot id is the token's prefix: rate keys need no getMe round trip.
        prefix = token.split(":", 1)[0]
        self.bot_id = prefix if prefix.isdigit() else "bot"
        self.username: str | None = (username or "").lstrip("@") or None
        self._bot = Bot(
            token,
            base_url=base_url or "https://api.telegram.org/bot",
            request=_make_request(http_client, self.connections, request_timeout),
            get_updates_request=HTTPXRequest(connection_pool_size=2, read_timeout=request_timeout),
        )
        self._open_lock = asyncio.Lock()
        self._opened = False
        # Telegram reports one membership change twice (my_chat_member and a service message).
        self._membership: dict[str, tuple[str, float]] = {}
        # Bulk sends queue here for a turn at the shared pacer (see ``_pace``); one gate per event loop.
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        # When this process may next send to a chat (local knowledge: its own last send there).
        self._chat_ready: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> TelegramChannel:
        def num(key: str, default: float) -> float:
            value = settings.get(key)
            return default if value is None or value == "" else float(value)

        return cls(
            str(settings.get("token") or ""),
            base_url=settings.get("base_url") or None,
            rate_per_second=num("rate_per_second", 30),
            per_chat_per_second=num("per_chat_per_second", 1),
            group_per_minute=num("group_per_minute", 20),
            paid_broadcast=_truthy(settings.get("paid_broadcast", False)),
            paid_rate_per_second=num("paid_rate_per_second", 1000),
            webhook_secret=settings.get("webhook_secret") or None,
            mode=str(settings.get("mode") or "polling"),
            public_url=public_url,
            webhook_path=str(settings.get("webhook_path") or DEFAULT_WEBHOOK_PATH),
            username=settings.get("username") or None,
            safety_margin=num("safety_margin", 0.02),
            chat_safety_margin=num("chat_safety_margin", 0.1),
            pacing_waiters=int(num("pacing_waiters", 8)),
            http_client=str(settings.get("http_client") or "aiohttp"),
            connections=int(num("connections", 8)),
            concurrency=int(num("concurrency", 32)),
            poll_timeout=int(num("poll_timeout", 30)),
            max_inline_wait=num("max_inline_wait", 60.0),
        )

    @property
    def bot(self) -> Bot:
        return self._bot

    @property
    def webhook_url(self) -> str:
        return self.public_url.rstrip("/") + self.webhook_path

    async def open(self) -> None:
        """Initialise the bot (getMe gives the username commands are addressed to)."""
        async with self._open_lock:
            if self._opened:
                return
            await self._bot.initialize()
            actual = self._bot.username
            if self.username and actual and self.username.lower() != actual.lower():
                log.warning(
                    "telegram: settings say the bot is @%s but the token belongs to @%s; using @%s",
                    self.username,
                    actual,
                    actual,
                )
            self.username = actual or self.username
            self._opened = True
        if self.mode == "webhook" and self.public_url:
            try:
                await self.register_webhook()
            except TelegramError as exc:
                log.warning("telegram: setWebhook failed: %s", exc)

    async def close(self) -> None:
        if self._opened:
            await self._bot.shutdown()
            self._opened = False

    async def register_webhook(self) -> str:
        """Point Telegram at ``public_url + webhook_path`` with the secret header; returns the URL."""
        await self._bot.set_webhook(
            url=self.webhook_url, secret_token=self.webhook_secret, allowed_updates=list(ALLOWED_UPDATES)
        )
        return self.webhook_url

    # ---------------------------------------------------------------------------------------- addresses

    def normalize_address(self, raw: str) -> str:
        value = str(raw).strip()
        if _ADDRESS_ID.fullmatch(value):
            return value
        if _ADDRESS_NAME.fullmatch(value):
            return value.lower()  # Telegram usernames are case-insensitive
        raise InvalidAddress(
            f"not a Telegram chat id or @channelname: {self.mask_address(value)!r}"
            " (expected digits, optionally negative, or @name of 5-32 letters, digits or _)"
        )

    @staticmethod
    def _chat_id(address: str) -> int | str:
        return address if address.startswith("@") else int(address)

    def deep_link(self, payload: str) -> str | None:
        """``t.me/<bot>?start=<payload>`` arrives back as ``/start <payload>``."""
        return f"https://t.me/{self.username}?start={payload}" if self.username else None

    def describe(self, content: Content) -> dict[str, Any]:
        source = content_html(content)
        return {"parts": len(split_html(source)), "characters": len(visible_text(source))}

    def rates(self, item: Outbound) -> list[Rate]:
        """The shared limits one send to ``item`` counts against (bot-wide, then per chat or group).

        With a safety margin each limit is declared that much slower and rounded up to whole
        milliseconds between sends: a provider that counts in a sliding window then never sees a burst
        from network jitter, and the shared pacer's Redis arithmetic stays exact.
        """
        try:
            address = self.normalize_address(item.address)
        except InvalidAddress:
            address = item.address
        overall = _rate(f"tg:{self.bot_id}:all", self.rate_per_second, 1.0, self.safety_margin)
        if item.endpoint_kind == "person":
            chat = _rate(
                f"tg:{self.bot_id}:chat:{address}", self.per_chat_per_second, 1.0, self.chat_safety_margin
            )
        else:
            chat = _rate(
                f"tg:{self.bot_id}:group:{address}", self.group_per_minute, 60.0, self.chat_safety_margin
            )
        return [overall, chat]

    @staticmethod
    def _markup(content: Content) -> InlineKeyboardMarkup | None:
        rows = []
        for button in content.buttons:
            if button.url:
                rows.append([InlineKeyboardButton(button.text, url=button.url)])
            elif button.data is not None:
                rows.append([InlineKeyboardButton(button.text, callback_data=button.data)])
        return InlineKeyboardMarkup(rows) if rows else None

    # ---------------------------------------------------------------------------------------- sending

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        """Chats run concurrently (bounded); one chat's items go strictly in order."""
        if not items:
            return
        if not self._opened:
            await self.open()
        by_chat: dict[str, list[Outbound]] = {}
        for item in items:
            try:
                key = self.normalize_address(item.address)
            except InvalidAddress:
                key = item.address
            by_chat.setdefault(key, []).append(item)
        results: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
        slots = asyncio.Semaphore(self.concurrency)

        async def run_chat(chat_items: list[Outbound]) -> None:
            async with slots:
                stop: Outcome | None = None
                for item in chat_items:
                    if stop is None:
                        outcome = await self._send_item(item, pacer)
                        # Later items for this chat would fail the same way, or overtake a retry.
                        if isinstance(outcome, RetryLater | RecipientGone | Moved):
                            stop = outcome
                    else:
                        outcome = stop
                    await results.put((item.delivery_id, outcome))

        tasks = [asyncio.create_task(run_chat(chat_items)) for chat_items in by_chat.values()]
        try:
            for _ in range(len(items)):
                yield await results.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            self._gates = {k: v for k, v in self._gates.items() if not k.is_closed()}
            gate = self._gates[loop] = asyncio.Semaphore(self.pacing_waiters)
        return gate

    async def _pace(self, pacer: Pacer, rates: list[Rate], lane: Lane) -> None:
        """Wait for a turn under every rate in ``rates``.

        A chat this process sent to a moment ago first waits here, locally, for its own limit: it then
        asks the shared pacer only when the chat is free, and does not hold a turn others could use.
        Bulk sends take turns through a small gate, so the shared pacer sees a few waiters per process
        instead of hundreds (fewer Redis calls, steadier timing). Urgent sends skip the gate: the urgent
        lane never queues behind a broadcast.
        """
        if isinstance(pacer, NoPacing):
            return
        chat = rates[-1]
        ready = self._chat_ready.get(chat.key)
        if ready is not None:
            delay = ready - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if lane == "urgent":
            await pacer.wait(rates, lane)
        else:
            async with self._gate():
                await pacer.wait(rates, lane)
        now = time.monotonic()
        self._chat_ready[chat.key] = now + chat.period / chat.count
        if len(self._chat_ready) > 50_000:
            self._chat_ready = {k: v for k, v in self._chat_ready.items() if v > now}

    async def _send_item(self, item: Outbound, pacer: Pacer) -> Outcome:
        """Send every part of one item; never raises for the recipient's sake."""
        try:
            chat_id = self._chat_id(self.normalize_address(item.address))
        except InvalidAddress as exc:
            return Rejected(str(exc))
        parts = split_html(content_html(item.content))
        if not parts:
            return Rejected("empty message")
        markup = self._markup(item.content)
        rates = self.rates(item)
        chat_key = rates[-1].key
        first_id: int | None = None
        for index, part in enumerate(parts):
            attempts = 0
            while True:
                await self._pace(pacer, rates, item.lane)
                try:
                    message = await self._bot.send_message(
                        chat_id,
                        part,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup if index == len(parts) - 1 else None,
                        allow_paid_broadcast=True if self.paid_broadcast else None,
                    )
                except RetryAfter as exc:
                    delay = _retry_after_seconds(exc)
                    await pacer.pause(chat_key, delay)
                    if index == 0:
                        return RetryLater(f"flood control: retry after {delay:g}s", delay=delay)
                    # Parts already went out: a retry would repeat them, so wait here instead.
                    attempts += 1
                    if delay > self.max_inline_wait or attempts > 5:
                        return Rejected(f"partly sent ({index}/{len(parts)} parts): flood wait {delay:g}s")
                    await asyncio.sleep(delay)
                    continue
                except TelegramError as exc:
                    outcome = classify_error(exc)
                    if index > 0 and _is_transient(exc) and attempts < 3:
                        attempts += 1
                        await asyncio.sleep(0.5 * 2**attempts)
                        continue
                    if index > 0 and isinstance(outcome, RetryLater):
                        return Rejected(f"partly sent ({index}/{len(parts)} parts): {exc.message}")
                    return outcome
                except Exception as exc:  # a bug must not take the whole batch down
                    log.exception("telegram: unexpected error sending delivery %s", item.delivery_id)
                    if index > 0:
                        return Rejected(f"partly sent ({index}/{len(parts)} parts): {exc!r}")
                    return RetryLater(f"unexpected error: {exc!r}")
                break
            if first_id is None:
                first_id = message.message_id
        return Sent(provider_id=str(first_id))

    # ---------------------------------------------------------------------------------------- inbound

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
        }
        stripped = text.strip()
        if stripped.startswith("/") and len(stripped) > 1 and not stripped[1].isspace():
            head, *args = stripped.split()
            name, _, target = head[1:].partition("@")
            if target and self.username and target.lower() != self.username.lower():
                return []  # a command for another bot in the same group
            return [Inbound(kind="command", command=name.lower(), args=tuple(args), text=text, **common)]
        return [Inbound(kind="text", text=text, **common)]

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
        return records

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
                    for record in records:
                        await sink(record)
                except Exception:
                    log.exception("telegram: update %s could not be handled", update.update_id)
                offset = update.update_id + 1


CHANNEL = TelegramChannel
