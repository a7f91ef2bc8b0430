"""The Telegram adapter: settings, capabilities, addresses, pacing and sending."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from channels.base import (
    Capabilities,
    Channel,
    Content,
    EndpointKind,
    InvalidAddress,
    Lane,
    Moved,
    NoPacing,
    Outbound,
    Outcome,
    Pacer,
    Paused,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    outcome_of_error,
)
from channels.telegram.config import DEFAULT_WEBHOOK_PATH, TelegramSettings
from channels.telegram.errors import _is_transient, _retry_after_seconds, classify_error
from channels.telegram.html import content_html, split_html, visible_text
from channels.telegram.inbound import ALLOWED_UPDATES, TelegramInbound
from channels.telegram.transport import _make_request

log = logging.getLogger("channels.telegram")


_ADDRESS_ID = re.compile(r"-?[1-9][0-9]{0,18}")
_ADDRESS_NAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _rate(key: str, count: float, period: float, margin: float) -> Rate:
    """``count`` per ``period``; with a margin, that much slower."""
    if margin <= 0:
        return Rate(key, count, period)
    return Rate(key, count, period * (1.0 + margin))


class TelegramChannel(TelegramInbound, Channel):
    """Sends through the Bot API; receives by webhook or long polling."""

    name = "telegram"
    settings_model = TelegramSettings
    capabilities = Capabilities(listening="listener", buttons=True, batch_size=100, costs=("parts",))

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
        # Polling: one getUpdates poller per bot in the deployment. Webhook: Telegram calls the API.
        self.capabilities = Capabilities(
            listening="listener" if mode == "polling" else "none",
            webhooks=bool(webhook_secret),
            buttons=True,
            batch_size=100,
            costs=("parts",),
            concurrency=max(1, int(concurrency)),
        )
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
        # Slots given back in the background: the next send need not wait for that Redis round trip.
        self._releases: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> TelegramChannel:
        conf = cls.validate_settings(settings)
        assert isinstance(conf, TelegramSettings)
        values = conf.model_dump(exclude={"enabled", "token"})
        return cls(conf.token, public_url=public_url, **values)

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

    async def check_credentials(self) -> str:
        """getMe with the configured token (``hub doctor``); on an adapter that was not opened."""
        try:
            await self._bot.initialize()  # getMe; a refused token raises InvalidToken
            return f"the token belongs to @{self._bot.username}"
        finally:
            await self._bot.shutdown()  # its HTTP sessions, also after a refusal

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
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

    def address_kind(self, address: str) -> EndpointKind:
        """Telegram gives groups, supergroups and channels negative ids, people positive ones."""
        if address.startswith("@"):
            return "channel"
        return "group" if address.startswith("-") else "person"

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
            try:
                await self.open()
            except Exception as exc:  # Telegram unreachable or the token refused: every item says so
                log.warning("telegram: opening the bot failed: %r", exc)
                for item in items:
                    yield item.delivery_id, outcome_of_error(self.name, item, exc, log=False)
                return
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

    async def _pace(self, pacer: Pacer, rates: list[Rate], lane: Lane, max_pause: float | None) -> Any:
        """Wait for a turn under every rate in ``rates``; returns the permit to release after the send.

        A chat this process sent to a moment ago first waits here, locally, for its own limit: it then
        asks the shared pacer only when the chat is free, and does not hold a turn others could use.
        Bulk sends take turns through a small gate, so the shared pacer sees a few waiters per process
        instead of hundreds (fewer Redis calls, steadier timing). Urgent sends skip the gate: the urgent
        lane never queues behind a broadcast. The permit holds the send's place in each limit until
        Telegram has answered (``hub/ratelimit.py`` says why spacing alone lets a few 429s through).
        ``Paused`` is raised when flood control holds the bot longer than ``max_pause``.
        """
        if isinstance(pacer, NoPacing):
            return None
        chat = rates[-1]
        ready = self._chat_ready.get(chat.key)
        if ready is not None:
            delay = ready - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if lane == "urgent":
            return await pacer.acquire(rates, lane, max_pause=max_pause)
        async with self._gate():
            return await pacer.acquire(rates, lane, max_pause=max_pause)

    async def _answered(self, pacer: Pacer, permit: Any, chat: Rate) -> None:
        """Telegram answered: the places in its limits count from now."""
        now = time.monotonic()
        self._chat_ready[chat.key] = now + chat.period / chat.count
        if len(self._chat_ready) > 50_000:
            self._chat_ready = {k: v for k, v in self._chat_ready.items() if v > now}
        if permit is not None:
            # A slot given back a moment later only frees a moment later: the limit still holds.
            task = asyncio.create_task(self._release(pacer, permit))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    @staticmethod
    async def _release(pacer: Pacer, permit: Any) -> None:
        try:
            await pacer.release(permit)
        except Exception as exc:  # the slot frees itself after its lease; nothing is lost
            log.warning("telegram: giving a pacing slot back failed: %r", exc)

    async def _flood(self, pacer: Pacer, rates: list[Rate], delay: float) -> None:
        """A 429: hold the chat, and the whole bot in every worker.

        Telegram's answer does not say which limit was hit. The shared pacer keeps every chat under its
        own limit, so a 429 means the bot as a whole is being held back (flood control, a storm): going
        on with 29 requests a second to other chats would only prolong it.
        """
        for rate in rates:
            await pacer.pause(rate.key, delay)

    async def _send_item(self, item: Outbound, pacer: Pacer) -> Outcome:
        """Send every part of one item; never raises: any failure becomes this item's outcome."""
        try:
            return await self._send_parts(item, pacer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the whole batch down, nor leave the row hanging
            return outcome_of_error(self.name, item, exc)

    async def _send_parts(self, item: Outbound, pacer: Pacer) -> Outcome:
        try:
            chat_id = self._chat_id(self.normalize_address(item.address))
        except InvalidAddress as exc:
            return Rejected(str(exc))
        parts = split_html(content_html(item.content))
        if not parts:
            return Rejected("empty message")
        markup = self._markup(item.content)
        rates = self.rates(item)
        first_id: int | None = None
        for index, part in enumerate(parts):
            attempts = 0
            while True:
                try:
                    # Flood control holding the bot (another worker drew the 429) sends a first part back
                    # to the schedule at no cost; later parts wait, or the text would arrive torn.
                    permit = await self._pace(pacer, rates, item.lane, 1.0 if index == 0 else None)
                except Paused as held:
                    reason = f"flood control: bot paused for {held.seconds:.0f}s"
                    return RetryLater(reason, delay=held.seconds, provider=True)
                try:
                    message = await self._bot.send_message(
                        chat_id,
                        part,
                        parse_mode=ParseMode.HTML,
                        reply_markup=markup if index == len(parts) - 1 else None,
                        allow_paid_broadcast=True if self.paid_broadcast else None,
                    )
                except RetryAfter as exc:
                    await self._answered(pacer, permit, rates[-1])
                    delay = _retry_after_seconds(exc)
                    await self._flood(pacer, rates, delay)
                    if index == 0:
                        reason = f"flood control: retry after {delay:g}s"
                        return RetryLater(reason, delay=delay, provider=True)
                    # Parts already went out: a retry would repeat them, so wait here instead.
                    attempts += 1
                    if delay > self.max_inline_wait or attempts > 5:
                        return Rejected(f"partly sent ({index}/{len(parts)} parts): flood wait {delay:g}s")
                    await asyncio.sleep(delay)
                    continue
                except TelegramError as exc:
                    await self._answered(pacer, permit, rates[-1])
                    outcome = classify_error(exc)
                    if index > 0 and _is_transient(exc) and attempts < 3:
                        attempts += 1
                        await asyncio.sleep(0.5 * 2**attempts)
                        continue
                    if index > 0 and isinstance(outcome, RetryLater):
                        return Rejected(f"partly sent ({index}/{len(parts)} parts): {exc.message}")
                    return outcome
                except BaseException:
                    await self._answered(pacer, permit, rates[-1])
                    raise
                await self._answered(pacer, permit, rates[-1])
                break
            if first_id is None:
                first_id = message.message_id
        return Sent(provider_id=str(first_id))


CHANNEL = TelegramChannel
