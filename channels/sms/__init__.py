"""The SMS channel: Indonesian mobile numbers, GSM-7/UCS-2 cost control, weighted gateway failover,
delivery reports and keyword commands (``DAFTAR``, ``JAM``, ``LACAK``…) sent by citizens.

Settings (``[channels.sms]``)::

    enabled = true               # read by the hub (settings.enabled_channels); ignored here
    sender = "DUKCAPIL"          # sender id / short code (must be registered with the operators)
    number = "1500537"           # the number citizens text keywords to (shown in help texts)
    max_segments = 6             # longer texts are rejected, not silently billed ×10
    transliterate = true         # curly quotes, dashes, accents → GSM-7 when that avoids UCS-2
    dlr_secret = "…"             # HMAC key for the per-delivery token in delivery-report URLs
    mo_secret = "…"              # the ``k`` parameter Kannel's sms-service get-url must carry
    concurrency = 16             # sends in flight per process, all batches together (gateways slow down
                                 # when flooded: Kannel's smsbox takes fewer messages/s at 64 than at 16)
    failure_threshold = 5        # consecutive retry-later errors that take a gateway out of rotation
    cooloff_seconds = 30         # how long it stays out before one probe is let through
    mo_per_minute = 10           # inbound SMS taken from one number per minute (all API processes)

    [[channels.sms.gateways]]
    driver = "kannel"            # or "http"; see channels/sms/drivers.py for each driver's keys
    weight = 3
    rate_per_second = 10
    url = "http://127.0.0.1:13013"
    username = "hub"
    password = "…"

Kannel's sms-service for inbound SMS must not reply itself (``max-messages = 0``) and calls::

    get-url = "https://hub.example/v1/channels/sms/webhook?kind=mo&k=<mo_secret>&from=%p&text=%a"
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from channels.base import (
    Capabilities,
    Channel,
    Content,
    Inbound,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    send_each,
)
from channels.sms.config import SmsSettings
from channels.sms.drivers import AmbiguousRetry, Failover, Gateway, build_gateway
from channels.sms.numbers import mask_msisdn, normalize_msisdn
from channels.sms.segments import TooManySegments, analyze, check_segments, transliterate

log = logging.getLogger(__name__)

#: Keyword → (canonical command, locale). Indonesian first; English synonyms answer in English.
KEYWORDS: dict[str, tuple[str, str]] = {
    "DAFTAR": ("daftar", "id"),
    "BERHENTI": ("berhenti", "id"),
    "STOP": ("berhenti", "id"),
    "JAM": ("jam", "id"),
    "LAYANAN": ("layanan", "id"),
    "LACAK": ("lacak", "id"),
    "INFO": ("info", "id"),
    "SUBSCRIBE": ("daftar", "en"),
    "UNSUBSCRIBE": ("berhenti", "en"),
    "HOURS": ("jam", "en"),
    "SERVICES": ("layanan", "en"),
    "TRACK": ("lacak", "en"),
    "HELP": ("info", "en"),
    # The hub's own command words, which its help text names (``langganan - berlangganan …``).
    "LANGGANAN": ("langganan", "id"),
    "BANTUAN": ("bantuan", "id"),
    "DATAKU": ("dataku", "id"),
    "HAPUS": ("hapus", "id"),
    "MYDATA": ("dataku", "en"),
    "ERASE": ("hapus", "en"),
    # A kelurahan relay confirms it passed a broadcast on: ``OK KODE [cara]`` (hub.relays).
    "OK": ("ok", "id"),
    "DITERUSKAN": ("diteruskan", "id"),
    "FORWARDED": ("forwarded", "en"),
}

#: Kannel DLR types (the ``%d`` of the dlr-url): 1 delivered, 2 undelivered, 16 rejected by the SMSC.
#: 4 (buffered at SMSC) and 8 (accepted by SMSC) are not final and yield no record.
DLR_STATUS = {1: "delivered", 2: "failed", 16: "failed"}

WEBHOOK_PATH = "/v1/channels/sms/webhook"


def circuit_key(gateway: Gateway) -> str:
    """The pacer key whose pause is a gateway's open circuit, shared by every worker through Redis."""
    return f"{gateway.rate_key}:circuit"


class SmsChannel(Channel):
    """SMS through one or more gateways, chosen by weight, with failover and circuit breakers."""

    name: ClassVar[str] = "sms"
    settings_model = SmsSettings
    # Keywords have no prefix; a bare STOP leaves every topic (the SMS convention). Inbound SMS and
    # delivery reports arrive by webhook.
    capabilities = Capabilities(
        webhooks=True,
        command_prefix="",
        bare_stop_leaves_all=True,
        batch_size=100,
        costs=("segments", "encoding"),
    )

    def __init__(
        self,
        gateways: Sequence[Gateway],
        *,
        public_url: str,
        dlr_secret: str,
        mo_secret: str = "",
        max_segments: int = 6,
        transliterate: bool = False,
        concurrency: int = 16,
        failure_threshold: int = 5,
        cooloff_seconds: float = 30.0,
        mo_per_minute: int = 10,
    ):
        if not dlr_secret:
            raise ValueError("channels.sms: dlr_secret is required (it signs delivery-report URLs)")
        if max_segments < 1:
            raise ValueError("channels.sms: max_segments must be at least 1")
        self.gateways = list(gateways)
        self.failover = Failover(self.gateways, threshold=failure_threshold, cooloff=cooloff_seconds)
        self.public_url = public_url.rstrip("/")
        self._dlr_key = dlr_secret.encode()
        self._mo_secret = mo_secret
        self.max_segments = max_segments
        self.transliterate = transliterate
        self.concurrency = max(1, concurrency)
        self.capabilities = replace(type(self).capabilities, concurrency=self.concurrency)
        self.mo_limit = MoLimiter(mo_per_minute)
        self._in_flight: asyncio.Semaphore | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> SmsChannel:
        conf = cls.validate_settings(settings)
        assert isinstance(conf, SmsSettings)
        gateways = [build_gateway(g, index=i, sender=conf.sender) for i, g in enumerate(conf.gateways)]
        return cls(
            gateways,
            public_url=public_url,
            dlr_secret=conf.dlr_secret,
            mo_secret=conf.mo_secret,
            max_segments=conf.max_segments,
            transliterate=conf.transliterate,
            concurrency=conf.concurrency,
            failure_threshold=conf.failure_threshold,
            cooloff_seconds=conf.cooloff_seconds,
            mo_per_minute=conf.mo_per_minute,
        )

    def use_shared_limits(self, count: SharedCount) -> None:
        """Count inbound SMS per number with the hub's shared count (Redis), so the limit holds across
        every API process rather than per process."""
        self.mo_limit.shared = count

    async def open(self) -> None:
        for gateway in self.gateways:
            await gateway.open()

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()

    # ----------------------------------------------------------------------------------------------------
    # Addresses and cost

    def normalize_address(self, raw: str) -> str:
        return normalize_msisdn(raw)

    def mask_address(self, address: str) -> str:
        return self.mask_phone(address)

    def prepare_text(self, text: str) -> str:
        """The text as it will go over the air (transliterated to GSM-7 when configured and possible)."""
        return transliterate(text) if self.transliterate else text

    def describe(self, content: Content) -> dict[str, Any]:
        info = analyze(self.prepare_text(content.text))
        # max_segments: the hub refuses a longer text at preview and publish, before anything is stored.
        return {
            "encoding": info.encoding,
            "segments": info.segments,
            "max_segments": self.max_segments,
            "characters": info.characters,
        }

    # ----------------------------------------------------------------------------------------------------
    # Delivery-report tokens

    def dlr_token(self, delivery_id: int) -> str:
        """An HMAC of the delivery id: only URLs we issued can report on a delivery."""
        return hmac.new(self._dlr_key, f"sms-dlr:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def dlr_url(self, delivery_id: int) -> str:
        # Kannel replaces %d with the DLR type when it calls the URL.
        return (
            f"{self.public_url}{WEBHOOK_PATH}?kind=dlr&d={delivery_id}&t={self.dlr_token(delivery_id)}&s=%d"
        )

    # ----------------------------------------------------------------------------------------------------
    # Sending

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        if self._in_flight is None:
            # Shared by every batch this instance sends (a worker runs several jobs at once).
            self._in_flight = asyncio.Semaphore(self.concurrency)
        async for done in send_each(
            self.name, items, lambda item: self._send_one(item, pacer), self._in_flight
        ):
            yield done

    async def _send_one(self, item: Outbound, pacer: Pacer) -> Outcome:
        try:
            to = normalize_msisdn(item.address)
        except InvalidAddress as exc:
            return RecipientGone(str(exc))
        text = self.prepare_text(item.content.text)
        if not text.strip():
            return Rejected("the SMS text is empty")
        try:
            info = check_segments(text, self.max_segments)
        except TooManySegments as exc:
            return Rejected(str(exc))
        dlr_url = self.dlr_url(item.delivery_id)

        last: RetryLater | None = None
        cooling: list[float] = []
        for gateway in self.failover.attempts():
            shared = await pacer.paused_for(circuit_key(gateway))
            if shared > 0:  # another worker found this gateway down: its circuit is open for everyone
                self.failover.breakers[gateway.name].hold(shared)
                cooling.append(shared)
                continue
            await pacer.wait([Rate(gateway.rate_key, gateway.rate_per_second)], lane=item.lane)
            outcome = await gateway.send(
                to, text, coding=info.encoding, delivery_id=item.delivery_id, dlr_url=dlr_url
            )
            if self.failover.record(gateway, outcome):
                log.warning(
                    "sms: gateway %s is failing; held for %.0fs by every worker",
                    gateway.name, self.failover.breakers[gateway.name].cooloff,
                )  # fmt: skip
                await pacer.pause(circuit_key(gateway), self.failover.breakers[gateway.name].cooloff)
            if not isinstance(outcome, RetryLater):
                return outcome
            log.warning(
                "sms: gateway %s could not take delivery %s to %s: %s",
                gateway.name, item.delivery_id, mask_msisdn(to), outcome.reason,
            )  # fmt: skip
            if outcome.delay:
                await pacer.pause(gateway.rate_key, outcome.delay)
            if isinstance(outcome, AmbiguousRetry):
                # The gateway may have taken it: another gateway now could deliver it twice.
                return RetryLater(outcome.reason, outcome.delay, provider=True)
            last = outcome
        if last is None:
            wait = min([*cooling, self.failover.retry_in() or float("inf")])
            return RetryLater(
                "every SMS gateway is cooling off after repeated failures",
                None if wait == float("inf") else wait,
                provider=True,
            )
        return RetryLater(
            f"no SMS gateway took the message; last error: {last.reason}", last.delay, provider=True
        )

    # ----------------------------------------------------------------------------------------------------
    # Webhooks: delivery reports and inbound SMS

    async def handle_webhook(self, request: WebhookRequest) -> tuple[list[Inbound], WebhookResponse]:
        kind = request.query.get("kind", "")
        if kind == "dlr":
            return self._handle_dlr(request.query), WebhookResponse(200, "ok")
        if kind == "mo":
            return await self._handle_mo(request.query), WebhookResponse(200, "")
        return [], WebhookResponse(400, "unknown webhook kind")

    def _handle_dlr(self, query: Mapping[str, str]) -> list[Inbound]:
        raw_id, token = query.get("d", ""), query.get("t", "")
        if not (raw_id.isascii() and raw_id.isdigit()):
            raise WebhookRejected("SMS delivery report without a valid delivery id")
        delivery_id = int(raw_id)
        if not hmac.compare_digest(token.encode(), self.dlr_token(delivery_id).encode()):
            raise WebhookRejected("SMS delivery report with a wrong token")
        raw_type = query.get("s", "")
        status = DLR_STATUS.get(int(raw_type)) if raw_type.isascii() and raw_type.isdigit() else None
        if status is None:
            return []  # intermediate (queued / accepted by SMSC) or a gateway that gave no type
        return [Inbound(channel=self.name, kind="receipt", delivery_id=delivery_id, receipt_status=status)]

    async def _handle_mo(self, query: Mapping[str, str]) -> list[Inbound]:
        if not self._mo_secret:
            raise WebhookRejected("inbound SMS refused: channels.sms.mo_secret is not configured")
        if not hmac.compare_digest(query.get("k", "").encode(), self._mo_secret.encode()):
            raise WebhookRejected("inbound SMS with a wrong shared secret")
        try:
            sender = normalize_msisdn(query.get("from", ""))
        except InvalidAddress:
            log.info("sms: ignoring inbound SMS from a sender that is not an Indonesian mobile number")
            return []
        if not await self.mo_limit.admit(sender):
            log.warning(
                "sms: inbound SMS from %s over the per-number limit; not answered", mask_msisdn(sender)
            )
            return []
        return [parse_mo(sender, query.get("text", ""), channel=self.name)]


#: A count shared by every process (the hub's Redis): ``count(name, who, limit, window)`` records one
#: event of ``who`` and says whether it fits ``limit`` per ``window`` seconds. The hub hands one to
#: ``SmsChannel.use_shared_limits``; it keeps a keyed hash of ``who``, never the number.
SharedCount = Callable[[str, str, int, float], Awaitable[bool]]


class MoLimiter:
    """At most ``per_minute`` inbound SMS per number in any 60 s, so one phone (or a loop between two
    auto-responders) cannot make the hub send and pay for reply after reply, nor guess PINs faster than
    the bot's own limits notice. Counted in the hub's Redis once the hub shares its count (``shared``),
    so every API process together takes ``per_minute``; without it (or while Redis fails) each process
    keeps its own windows. ``0`` turns the limit off."""

    def __init__(self, per_minute: int, *, window: float = 60.0, max_numbers: int = 100_000):
        self.per_minute, self.window, self.max_numbers = per_minute, window, max_numbers
        self.shared: SharedCount | None = None
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    async def admit(self, number: str) -> bool:
        """Count one inbound SMS from ``number``: whether it is within the limit."""
        if self.per_minute <= 0:
            return True
        if self.shared is not None:
            try:
                return await self.shared("sms-mo", number, self.per_minute, self.window)
            except Exception as exc:  # Redis down: the process's own count rather than none at all
                log.warning(
                    "sms: shared inbound limit unavailable (%s); counting in this process", type(exc).__name__
                )
        return self.allow(number)

    def allow(self, number: str, now: float | None = None) -> bool:
        """The in-process count (``admit`` uses it when there is no shared one)."""
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        times = self._seen.pop(number, None) or deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        allowed = len(times) < self.per_minute
        if allowed:
            times.append(now)
        self._seen[number] = times  # most recent last: the oldest numbers are forgotten first
        while len(self._seen) > self.max_numbers:
            self._seen.popitem(last=False)
        return allowed


def parse_mo(sender: str, text: str, *, channel: str = "sms") -> Inbound:
    """An inbound SMS → a ``command`` record when its first word is a keyword, else ``text``."""
    words = text.split()
    if words:
        keyword = words[0].strip(".,!?:;#/").upper()
        if keyword in KEYWORDS:
            command, locale = KEYWORDS[keyword]
            return Inbound(
                channel=channel,
                kind="command",
                address=sender,
                sender=sender,
                command=command,
                args=tuple(words[1:]),
                text=text.strip(),
                locale=locale,
            )
    return Inbound(channel=channel, kind="text", address=sender, sender=sender, text=text.strip())


CHANNEL = SmsChannel

__all__ = ["CHANNEL", "KEYWORDS", "MoLimiter", "SharedCount", "SmsChannel", "parse_mo"]
