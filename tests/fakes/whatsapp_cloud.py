"""A loopback WhatsApp Business Cloud API (Meta Graph API) for tests, strict where Meta's docs are.

It runs aiohttp in a background thread (like tests/fakes/telegram_api.py), so sync and async tests and
workers in other processes can all send to it; every method that touches state takes a lock. Facts and
sources: docs/whatsapp.md.

Typical use::

    fake = FakeWhatsApp(webhook_url=hub_url + "/v1/channels/whatsapp/webhook", app_secret="s3cret").start()
    fake.add_template("pengumuman_dukcapil", "id", "Pengumuman: {{1}}\\n\\n{{2}}")
    fake.add_non_user("6281200000009")              # sends to it answer 131026
    fake.user_writes("6281200000001", "JAM")        # opens the 24 h window, POSTs a signed inbound webhook
    ...  # POST f"{fake.base_url}/{fake.api_version}/{fake.phone_number_id}/messages",
    ...  #      headers={"Authorization": f"Bearer {fake.token}"}, json={...Meta's message object...}
    assert [m.parameters for m in fake.messages("6281200000001")] == [["Jadwal", "Buka 08.00"]]
    assert fake.rate_limit_errors == 0
    fake.stop()

What it enforces on ``POST /{version}/{phone_number_id}/messages`` (errors as Meta's Graph error object,
``{"error": {"message", "type", "code", "error_data": {"messaging_product", "details"}, "fbtrace_id"}}``,
with the HTTP status of Meta's error table; the checks run in this order):

- ``Authorization: Bearer <token>`` → else 401, code 190; another phone number id → 400, code 100.
- Body: ``messaging_product == "whatsapp"``, ``to`` 8–15 digits without "+", ``type`` text | template |
  interactive, ``biz_opaque_callback_data`` ≤ 512 chars → else 400, code 100 (131008: field missing).
- ``fail_next(code, to=None, times=1, http_status=None, retry_after=None)``: forced Meta errors (190,
  131053, 131000/500, 4, 80007…), checked before anything below.
- text: ``text.body`` ≤ 4096. interactive ``button``: body ≤ 1024, 1–3 reply buttons, title ≤ 20, id ≤ 256;
  interactive ``list``: body ≤ 4096, ``action.button`` ≤ 20, ≤ 10 sections, 1–10 rows in all, row
  id ≤ 200, title ≤ 24, description ≤ 72; ids and titles unique → else 400, code 131009.
- template: unknown (name, language) or not APPROVED → 404, code 132001; body parameter count ≠ the
  body's distinct ``{{n}}`` count → 400, code 132000; a parameter with a newline, a tab or more than 4
  consecutive spaces → 400, code 132018; empty parameter → 131008; filled-in body > 1024 → 132005.
- throughput: ``throughput`` (80) accepted sends + inbound messages within any sliding 1 s → 400, 130429.
- pair rate: GCRA, one send per ``pair_seconds`` (6) per recipient, ``pair_burst`` (1) at once → 131056.
- ``to`` added with ``add_non_user`` → 400, code 131026.
- text / interactive to a number that has not written within ``service_window`` (24 h) → 400, 131047.
  (``async_codes = {131026, 131047}`` answers 200 instead and POSTs a ``failed`` status with the code.)
- messaging limit: a template outside the recipient's window is business-initiated; a send that would
  make ``messaging_limit + 1`` unique such recipients within ``messaging_limit_window`` seconds → 400,
  ``TIER_CODE`` (131048, see docs/whatsapp.md); ``messaging_limit = 0`` is unlimited.
Only accepted sends fill the throughput, pair and tier windows; refused ones do not.

After each accepted send it POSTs signed status webhooks (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256
of the raw body with app_secret>``) to ``webhook_url``, one for each of ``statuses`` (default sent,
delivered, read), each carrying ``id`` (the wamid), ``recipient_id`` and the send's
``biz_opaque_callback_data``; ``shuffle_statuses = True`` sends them in a random order, ``status_delay``
waits that many seconds before each (``statuses = ("sent", "read")`` models Meta skipping "delivered").
One message's webhooks go in order, different messages' concurrently (``webhooks.concurrency``); anything
but 200 is retried (``webhook_attempts``, 3). ``wait_webhooks()`` / ``await fake.webhooks_drained()``
return when every queued webhook went out (tests/fakes/whatsapp_webhooks.py).

The user's side: ``user_writes(number, text, ago=0)`` (opens the 24 h window), ``user_presses(number,
button_id, title, context=wamid)`` (button_reply), ``user_picks(...)`` (list_reply),
``user_taps_quick_reply(number, payload, text)`` (template quick-reply, type ``button``),
``close_window(number)``. Each POSTs Meta's inbound ``messages`` webhook when configured.

Counters: ``messages(number)`` (``SentMessage``: type, text, template, language, parameters, buttons,
interactive, biz_opaque_callback_data, business_initiated, at by ``clock``), ``by_recipient()``, ``accepted``,
``rate_limit_errors`` (130429, 131056, 131048, forced 4/80007), ``errors`` [(to, code)], ``error_codes()``,
``max_per_second`` (most accepted sends in any sliding 1 s), ``tier_used()``, ``webhook_deliveries``
[(kind, wamid, HTTP status)], ``marked_read`` (wamids the hub marked read).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import socket
import threading
import time
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.threaded import ThreadedServer, wait_for_json
from tests.fakes.whatsapp_webhooks import Job, WebhookQueue
from tests.fakes.whatsapp_wire import (
    RATE_LIMIT_CODES,
    MetaError,
    SentMessage,
    Template,
    check_envelope,
    check_template_parameters,
    encode,
    envelope,
    inbound_value,
    parse_interactive,
    parse_template,
    parse_text,
    status_value,
)

__all__ = ["TIER_CODE", "FakeWhatsApp", "MetaError", "SentMessage", "Template"]

#: The code answered when a send would exceed the messaging limit. Meta's messaging-limits page names
#: none; its earlier text quoted 131048's wording for it (docs/whatsapp.md says more).
TIER_CODE = 131048
DAY = 86400.0


class _Window:
    """A sliding window of event times: at most ``count`` within ``period`` seconds."""

    def __init__(self, count: float, period: float = 1.0) -> None:
        self.count, self.period = count, period
        self.events: deque[float] = deque()

    def size(self, now: float) -> int:
        while self.events and self.events[0] <= now - self.period:
            self.events.popleft()
        return len(self.events)

    def fits(self, now: float) -> bool:
        return self.size(now) < self.count


class FakeWhatsApp(ThreadedServer):
    """The fake Cloud API for one business phone number. Configure, send, then read the counters."""

    thread_name = "fake-whatsapp"

    def __init__(
        self,
        *,
        token: str = "EAAFakeCloudApiTokenForLoopbackTestsOnly0123456789",
        phone_number_id: str = "109876543210001",
        display_phone_number: str = "6281100000000",
        waba_id: str = "102030405060708",
        api_version: str = "v21.0",
        throughput: float = 80,
        pair_seconds: float = 6.0,
        pair_burst: int = 1,
        messaging_limit: int = 250,
        messaging_limit_window: float = DAY,
        service_window: float = DAY,
        webhook_url: str | None = None,
        app_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Seconds, monotonic: every window (throughput, pair, tier, 24 h) reads it; tests may step it.
        self.clock = clock
        self.token = token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.api_version = api_version
        self.pair_seconds = pair_seconds
        self.pair_burst = pair_burst
        self.messaging_limit = messaging_limit
        self.messaging_limit_window = messaging_limit_window
        self.service_window = service_window
        self.webhook_url = webhook_url
        self.app_secret = app_secret
        #: Statuses POSTed after each accepted send, in this order unless ``shuffle_statuses``.
        self.statuses: tuple[str, ...] = ("sent", "delivered", "read")
        self.shuffle_statuses = False
        #: Seconds waited before each status webhook of a message.
        self.status_delay = 0.0
        #: Codes (131026, 131047) accepted with 200 and reported by a ``failed`` status webhook instead.
        self.async_codes: set[int] = set()
        self._lock = threading.RLock()
        self._throughput = _Window(throughput)
        self._sent_window = _Window(float("inf"))
        self._pair_due: dict[str, float] = {}  # recipient → theoretical arrival time (GCRA)
        self._tier: OrderedDict[str, float] = OrderedDict()  # business-initiated recipient → last send
        self._inbound: dict[str, float] = {}  # number → time of the user's last message
        self._templates: dict[tuple[str, str], Template] = {}
        self._non_users: set[str] = set()
        self._forced: list[tuple[str | None, MetaError, list[int]]] = []
        self._messages: list[SentMessage] = []
        self.accepted = 0
        self.rate_limit_errors = 0
        self.max_per_second = 0
        self.errors: list[tuple[str | None, int]] = []
        self.marked_read: list[str] = []
        #: Webhook delivery; ``webhooks.attempts`` and ``webhooks.concurrency`` (set before start) tune it.
        self.webhooks = WebhookQueue(lambda: (self.webhook_url, self.app_secret), self._encode)
        self.inbound: list[dict[str, Any]] = []  # the inbound message objects, as POSTed
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """What replaces ``https://graph.facebook.com`` (the adapter appends version and ids)."""
        return self.url

    @property
    def messages_url(self) -> str:
        return f"{self.url}/{self.api_version}/{self.phone_number_id}/messages"

    def _probe(self) -> None:
        request = urllib.request.Request(
            f"{self.url}/{self.api_version}/{self.phone_number_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        wait_for_json(request, lambda answer: answer["id"] == self.phone_number_id)

    def __enter__(self) -> FakeWhatsApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_post(r"/{version:v\d+\.\d+}/{phone_number_id}/messages", self._handle_messages)
        app.router.add_get(r"/{version:v\d+\.\d+}/{phone_number_id}", self._handle_phone_number)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.webhooks.start()

    async def _shutdown(self) -> None:
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------------------ configuration

    def set_throughput(self, per_second: float) -> None:
        """80 by default; Meta upgrades eligible numbers to 1,000."""
        with self._lock:
            self._throughput = _Window(per_second)

    def add_template(
        self, name: str, language: str, body: str, *, category: str = "UTILITY", status: str = "APPROVED"
    ) -> Template:
        """A template in one language; its body's ``{{1}}``… placeholders fix the parameter count."""
        template = Template(name, language, body, category.upper(), status.upper())
        with self._lock:
            self._templates[(name, language)] = template
        return template

    def add_non_user(self, number: str) -> None:
        """A number without WhatsApp: sends to it answer 131026 (message undeliverable)."""
        with self._lock:
            self._non_users.add(number.lstrip("+"))

    def fail_next(
        self,
        code: int,
        *,
        to: str | None = None,
        times: int = 1,
        http_status: int | None = None,
        details: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` sends (to ``to``, if given) with Meta's error ``code``."""
        error = MetaError(code, details, http_status=http_status)
        if retry_after is not None:
            error.headers["Retry-After"] = str(retry_after)
        with self._lock:
            self._forced.append((None if to is None else to.lstrip("+"), error, [times]))

    def close_window(self, number: str) -> None:
        """Forget the user's last message, as if 24 h had passed."""
        with self._lock:
            self._inbound.pop(number.lstrip("+"), None)

    # ------------------------------------------------------------------------------------ the user's side

    def user_writes(self, number: str, text: str, *, name: str = "Warga", ago: float = 0.0) -> str:
        """The user sends ``text`` (``ago`` seconds in the past): opens the 24 h window and POSTs the
        inbound ``messages`` webhook when a webhook URL and app secret are set. Returns its wamid."""
        return self._user_message(number, name, ago, {"type": "text", "text": {"body": text}})

    def user_presses(
        self, number: str, button_id: str, title: str, *, context: str | None = None, name: str = "Warga"
    ) -> str:
        """The user taps a reply button of an interactive message (``context``: that message's wamid)."""
        message: dict[str, Any] = {
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
        }
        if context is not None:
            message["context"] = {"from": self.display_phone_number, "id": context}
        return self._user_message(number, name, 0.0, message)

    def user_picks(
        self, number: str, row_id: str, title: str, *, context: str | None = None, name: str = "Warga"
    ) -> str:
        """The user chooses a row of an interactive list message."""
        message: dict[str, Any] = {
            "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": row_id, "title": title}},
        }
        if context is not None:
            message["context"] = {"from": self.display_phone_number, "id": context}
        return self._user_message(number, name, 0.0, message)

    def user_taps_quick_reply(
        self, number: str, payload: str, text: str, *, context: str | None = None, name: str = "Warga"
    ) -> str:
        """The user taps a template's quick-reply button: a message of type ``button``."""
        message: dict[str, Any] = {"type": "button", "button": {"payload": payload, "text": text}}
        if context is not None:
            message["context"] = {"from": self.display_phone_number, "id": context}
        return self._user_message(number, name, 0.0, message)

    def _user_message(self, number: str, name: str, ago: float, message: dict[str, Any]) -> str:
        number = number.lstrip("+")
        wamid = self._wamid()
        now = self.clock()
        message = {"from": number, "id": wamid, "timestamp": str(int(time.time() - ago)), **message}
        with self._lock:
            self._inbound[number] = max(self._inbound.get(number, -DAY * 365), now - ago)
            if not ago:
                self._throughput.events.append(now)  # Meta's throughput counts inbound messages too
            self.inbound.append(message)
        self.webhooks.put([("message", wamid, inbound_value(number, name, message), 0.0)])
        return wamid

    # ------------------------------------------------------------------------------------ counters

    def messages(self, number: str | None = None) -> list[SentMessage]:
        """Accepted sends, oldest first; to ``number`` only when given."""
        with self._lock:
            if number is None:
                return list(self._messages)
            number = number.lstrip("+")
            return [m for m in self._messages if m.to == number]

    def by_recipient(self) -> dict[str, list[SentMessage]]:
        with self._lock:
            found: dict[str, list[SentMessage]] = {}
            for message in self._messages:
                found.setdefault(message.to, []).append(message)
            return found

    def error_codes(self, number: str | None = None) -> list[int]:
        with self._lock:
            return [code for to, code in self.errors if number is None or to == number.lstrip("+")]

    def window_open(self, number: str) -> bool:
        with self._lock:
            return self._window_open(number.lstrip("+"), self.clock())

    def tier_used(self) -> int:
        """Unique business-initiated recipients in the current messaging-limit window."""
        with self._lock:
            return len(self._tier_members(self.clock()))

    @property
    def webhook_attempts(self) -> int:
        """POSTs per webhook before the fake gives up (Meta retries for much longer)."""
        return self.webhooks.attempts

    @webhook_attempts.setter
    def webhook_attempts(self, value: int) -> None:
        self.webhooks.attempts = value

    @property
    def webhook_deliveries(self) -> list[tuple[str, str, int]]:
        """Every webhook POST attempt: (kind "status:<status>" | "message", wamid, HTTP status or 0)."""
        return list(self.webhooks.deliveries)

    def webhooks_idle(self) -> bool:
        return self.webhooks.idle()

    def wait_webhooks(self, timeout: float = 10.0) -> None:
        """Block until every queued webhook was POSTed (or gave up); AssertionError on timeout."""
        self.webhooks.wait(timeout)

    async def webhooks_drained(self, timeout: float = 10.0) -> None:
        """``wait_webhooks`` for async tests: waits in a thread, so the caller's loop keeps serving."""
        await asyncio.get_running_loop().run_in_executor(None, self.webhooks.wait, timeout)

    # ------------------------------------------------------------------------------------ HTTP

    async def _handle_phone_number(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            self._check_phone_number(request)
        except MetaError as exc:
            return web.json_response(exc.body(), status=exc.http_status)
        return web.json_response(
            {
                "verified_name": "Disdukcapil",
                "display_phone_number": self.display_phone_number,
                "id": self.phone_number_id,
                "quality_rating": "GREEN",
                "throughput": {"level": "STANDARD" if self._throughput.count <= 80 else "HIGH"},
            }
        )

    async def _handle_messages(self, request: web.Request) -> web.Response:
        to: str | None = None
        try:
            self._check_auth(request)
            self._check_phone_number(request)
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                raise MetaError(100, "The request body is not valid JSON.") from exc
            if isinstance(body, dict) and body.get("status") == "read" and "message_id" in body:
                with self._lock:
                    if not any(m["id"] == body["message_id"] for m in self.inbound):
                        raise MetaError(131009, "Invalid message_id: no such received message.")
                    self.marked_read.append(str(body["message_id"]))
                return web.json_response({"success": True})
            to, _ = check_envelope(body)
            with self._lock:
                self._check_forced(to)
                result, webhooks = self._send(body)
        except MetaError as exc:
            with self._lock:
                self.errors.append((to, exc.code))
                if exc.code in RATE_LIMIT_CODES:
                    self.rate_limit_errors += 1
            return web.json_response(exc.body(), status=exc.http_status, headers=exc.headers)
        self.webhooks.put(webhooks)
        return web.json_response(result)

    def _check_auth(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self.token):
            raise MetaError(190)

    def _check_phone_number(self, request: web.Request) -> None:
        given = request.match_info["phone_number_id"]
        if given != self.phone_number_id:
            raise MetaError(
                100,
                f"Unsupported post request. Object with ID '{given}' does not exist, cannot be loaded due "
                "to missing permissions, or does not support this operation.",
            )

    def _check_forced(self, to: str) -> None:
        for entry in self._forced:
            target, error, left = entry
            if target is None or target == to:
                left[0] -= 1
                if left[0] <= 0:
                    self._forced.remove(entry)
                raise error

    # ------------------------------------------------------------------------------------ sending

    def _send(self, body: dict[str, Any]) -> tuple[dict[str, Any], Job]:
        """Validate and accept one message under the lock; returns the answer and its webhooks."""
        to, kind = check_envelope(body)
        name = language = None
        parameters: list[str] = []
        buttons: list[tuple[str, str]] = []
        interactive = None
        if kind == "text":
            text = parse_text(body)
        elif kind == "interactive":
            interactive, text, buttons = parse_interactive(body)
        else:
            name, language, parameters = parse_template(body)
            template = self._templates.get((name, language))
            if template is None or template.status != "APPROVED":
                raise MetaError(132001, f"template name ({name}) does not exist in {language}")
            text = check_template_parameters(template, parameters)
        now = self.clock()
        if not self._throughput.fits(now):
            raise MetaError(130429)
        due = self._pair_due.get(to, now)
        if max(due, now) + self.pair_seconds - now > self.pair_burst * self.pair_seconds + 1e-9:
            raise MetaError(131056)
        window_open = self._window_open(to, now)
        failure: MetaError | None = None
        if to in self._non_users:
            failure = MetaError(131026)
        elif kind != "template" and not window_open:
            failure = MetaError(131047)
        if failure is not None and failure.code not in self.async_codes:
            raise failure
        business_initiated = kind == "template" and not window_open
        if business_initiated and failure is None:
            members = self._tier_members(now)
            full = self.messaging_limit > 0 and len(members) >= self.messaging_limit
            if full and to not in members:
                raise MetaError(TIER_CODE)  # with Meta's own details text for 131048
            members[to] = now
            members.move_to_end(to)
        self._throughput.events.append(now)
        self._pair_due[to] = max(due, now) + self.pair_seconds
        self._sent_window.events.append(now)
        self.max_per_second = max(self.max_per_second, self._sent_window.size(now))
        wamid = self._wamid()
        data = body.get("biz_opaque_callback_data")
        message = SentMessage(
            wamid, to, kind, text, name, language, parameters, buttons, interactive, data, business_initiated,
            now, body,
        )  # fmt: skip
        self._messages.append(message)
        self.accepted += 1
        result: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": str(body["to"]), "wa_id": to}],
            "messages": [{"id": wamid, **({"message_status": "accepted"} if kind == "template" else {})}],
        }
        return result, self._status_webhooks(message, failure)

    def _window_open(self, number: str, now: float) -> bool:
        last = self._inbound.get(number)
        return last is not None and now - last < self.service_window

    def _tier_members(self, now: float) -> OrderedDict[str, float]:
        """The recipients counted in the moving window, oldest first (a refresh moves one to the end)."""
        horizon = now - self.messaging_limit_window
        while self._tier and next(iter(self._tier.values())) <= horizon:
            self._tier.popitem(last=False)
        return self._tier

    def _status_webhooks(self, message: SentMessage, failure: MetaError | None) -> Job:
        statuses = ["failed"] if failure is not None else list(self.statuses)
        if self.shuffle_statuses:
            random.shuffle(statuses)
        stamp = int(time.time())
        return [
            (f"status:{s}", message.id, status_value(message, s, stamp, failure), self.status_delay)
            for s in statuses
        ]

    def _wamid(self) -> str:
        return "wamid." + secrets.token_urlsafe(36)

    def _encode(self, value: dict[str, Any]) -> bytes:
        metadata = {
            "display_phone_number": self.display_phone_number,
            "phone_number_id": self.phone_number_id,
        }
        return encode(envelope(self.waba_id, metadata, value))
