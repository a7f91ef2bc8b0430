"""The WhatsApp adapter: settings, capabilities, addresses, the form of each send, pacing and the tier."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import httpx

from channels.base import (
    Capabilities,
    Channel,
    ChannelSettingsError,
    Content,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Paused,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    send_each,
    validate_table,
)
from channels.sms.numbers import normalize_msisdn
from channels.whatsapp.config import ANSWER_KINDS, TemplateSettings, WhatsAppSettings, missing_templates
from channels.whatsapp.errors import PAIR_RATE, REENGAGEMENT, MetaError, classify
from channels.whatsapp.format import MAX_TEXT, free_form, template_object, to_whatsapp
from channels.whatsapp.inbound import WhatsAppInbound
from channels.whatsapp.limits import PerNumber, Seen, SharedCount, Tier

log = logging.getLogger("channels.whatsapp")

#: The form the hub stores (``normalize_address``): taken as it is, without parsing it again per send.
_STORED = re.compile(r"\+628[1-9][0-9]{6,10}")

#: Longest pause (a 130429's hold, set by any worker) a send waits out before going back to the queue.
MAX_PAUSE = {"bulk": 1.0, "urgent": 5.0}


class WhatsAppChannel(WhatsAppInbound, Channel):
    """Sends through the WhatsApp Business Cloud API over one pooled httpx client; receives by webhook."""

    name: ClassVar[str] = "whatsapp"
    settings_model = WhatsAppSettings
    # Keywords without a prefix, as on SMS (a citizen types "JAM"); a bare BERHENTI leaves every topic,
    # as Meta's opt-out rules expect of a business; a business may write first only to people who
    # opted in (https://developers.facebook.com/docs/whatsapp/overview/getting-opt-in).
    capabilities = Capabilities(
        webhooks=True, buttons=True, command_prefix="", bare_stop_leaves_all=True, batch_size=100,
        costs=("characters",), opt_in_by_message=True,
    )  # fmt: skip

    def __init__(self, settings: WhatsAppSettings, *, public_url: str = "") -> None:
        self.settings = settings
        self.public_url = public_url
        self.token = settings.token
        self.phone_number_id = settings.phone_number_id
        self.app_secret = settings.app_secret
        self.verify_token = settings.verify_token
        self.templates: Mapping[str, TemplateSettings] = settings.templates
        self.fallback = settings.fallback_channel
        self.messages_url = (
            f"{settings.base_url.rstrip('/')}/{settings.api_version}/{settings.phone_number_id}/messages"
        )
        self.capabilities = replace(type(self).capabilities, concurrency=settings.concurrency)
        self.tier = Tier(
            f"wa:{settings.phone_number_id}",
            settings.messaging_limit,
            settings.messaging_limit_window_seconds,
            settings.tier_retry_seconds,
        )
        self.inbound_limit = PerNumber(settings.inbound_per_minute)
        self.seen = Seen()
        self._client: httpx.AsyncClient | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._templates_built: dict[tuple[str, Content], dict[str, Any]] = {}
        self._releases: set[asyncio.Future[None]] = set()  # pacing slots being given back
        self._throttled = 0  # rate-limit answers in a row, for the backoff when Meta names no wait

    @classmethod
    def validate_settings(cls, table: Mapping[str, Any]) -> WhatsAppSettings:
        """The table checked, and a template for every kind the hub sends as one (named key by key)."""
        missing = missing_templates(table)
        try:
            conf = validate_table(cls.name, cls.settings_model, table)
        except ChannelSettingsError as exc:
            raise ChannelSettingsError("; ".join([str(exc), *missing])) from None
        if missing:
            raise ChannelSettingsError("; ".join(missing))
        assert isinstance(conf, WhatsAppSettings)
        return conf

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> WhatsAppChannel:
        return cls(cls.validate_settings(settings), public_url=public_url)

    def use_shared_limits(self, count: SharedCount) -> None:
        """The tier, the inbound limit and seen message ids, counted across every process (Redis)."""
        self.tier.shared = self.inbound_limit.shared = self.seen.shared = count

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            conf = self.settings
            self._client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
                limits=httpx.Limits(
                    max_connections=conf.connections, max_keepalive_connections=conf.connections
                ),
                timeout=httpx.Timeout(conf.request_timeout, pool=None),
                http2=conf.http2 and conf.base_url.startswith("https:"),
            )
        return self._client

    async def open(self) -> None:
        self._http()

    async def close(self) -> None:
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check_credentials(self) -> str:
        """``GET /{version}/{phone_number_id}?fields=display_phone_number,verified_name`` (``hub doctor``)."""
        conf = self.settings
        url = f"{conf.base_url.rstrip('/')}/{conf.api_version}/{conf.phone_number_id}"
        client = self._http()
        response = await client.get(url, params={"fields": "display_phone_number,verified_name"})
        if response.status_code != 200:
            raise RuntimeError(
                MetaError.from_response(response.status_code, response.content, response.headers).reason
            )
        found = response.json()
        name = found.get("verified_name")
        shown = f"{found.get('display_phone_number', '?')}" + (f" ({name})" if name else "")
        return f"phone number id {conf.phone_number_id} is {shown}"

    # ---------------------------------------------------------------------------------------- addresses

    def normalize_address(self, raw: str) -> str:
        return normalize_msisdn(raw)

    def mask_address(self, address: str) -> str:
        return self.mask_phone(address)

    def describe(self, content: Content) -> dict[str, Any]:
        return {"characters": len(to_whatsapp(content))}

    def rates(self, digits: str) -> list[Rate]:
        """This number's throughput, and the pair rate to one user (a keyed hash: no number in Redis)."""
        conf = self.settings
        rates = [Rate(f"wa:{self.phone_number_id}", conf.rate_per_second, 1.0 + conf.safety_margin)]
        if conf.pair_interval_seconds > 0:
            who = hmac.new(self.app_secret.encode(), digits.encode(), hashlib.sha256).hexdigest()[:20]
            rates.append(Rate(f"wa:{self.phone_number_id}:to:{who}", 1, conf.pair_interval_seconds))
        return rates

    # ---------------------------------------------------------------------------------------- sending

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        if self._in_flight is None:  # shared by every batch this instance sends at once
            self._in_flight = asyncio.Semaphore(self.settings.concurrency)
        async for done in send_each(
            self.name, items, lambda item: self._send_one(item, pacer), self._in_flight
        ):
            yield done

    async def _send_one(self, item: Outbound, pacer: Pacer) -> Outcome:
        """Free text for an answer (its template on 131047), a template for everything else."""
        try:
            digits = _digits(item.address)
        except InvalidAddress as exc:
            return RecipientGone(str(exc))
        if item.kind in ANSWER_KINDS:
            kind, body = free_form(item.content)
            if kind == "text" and len(body["body"]) > MAX_TEXT:
                length = len(body["body"])
                return Rejected(
                    f"the WhatsApp text is {length} characters; at most {MAX_TEXT} go in one message"
                )
            outcome, error = await self._post(item, digits, kind, body, pacer)
            if error is None or error.code != REENGAGEMENT:
                return outcome
            log.info(
                "whatsapp: %s outside the 24 h window; sending the %s template",
                self.mask_phone("+" + digits),
                item.kind,
            )
        template = self.templates.get(item.kind)
        if template is None:
            if item.kind in ANSWER_KINDS:
                return Rejected(
                    f"the citizen has not written in 24 h and no template is set for {item.kind} messages "
                    f"(channels.whatsapp.templates.{item.kind})"
                )
            return Rejected(
                f"no WhatsApp template for {item.kind or 'unnamed'} messages (channels.whatsapp.templates)"
            )
        wait = await self.tier.admit(digits)
        if wait is not None:
            return RetryLater(self.tier.reason, delay=wait, provider=True, quota=True)
        outcome, _ = await self._post(item, digits, "template", self._template(item, template), pacer)
        if isinstance(outcome, Sent):
            await self.tier.sent(digits)
        return outcome

    def _template(self, item: Outbound, template: TemplateSettings) -> dict[str, Any]:
        """The template object, built once per Content: a broadcast hands every recipient the same one."""
        key = (item.kind, item.content)
        found = self._templates_built.get(key)
        if found is None:
            if len(self._templates_built) >= 256:
                self._templates_built.clear()
            found = self._templates_built[key] = template_object(item.content, template)
        return found

    async def _post(
        self, item: Outbound, digits: str, kind: str, body: dict[str, Any], pacer: Pacer
    ) -> tuple[Outcome, MetaError | None]:
        """One request, paced under this number's limits; the outcome, and Meta's error if it refused."""
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": digits,
            "type": kind,
            kind: body,
            "biz_opaque_callback_data": str(item.delivery_id),
        }
        rates = self.rates(digits)
        try:
            permit = await pacer.acquire(rates, item.lane, max_pause=MAX_PAUSE.get(item.lane, 1.0))
        except Paused as held:
            reason = f"WhatsApp throughput: this number is held for {held.seconds:.0f}s"
            return RetryLater(reason, delay=held.seconds, provider=True), None
        try:
            response = await self._http().post(self.messages_url, content=json.dumps(payload).encode())
        except httpx.HTTPError as exc:  # network, timeout: Meta's trouble or ours, not the citizen's
            return RetryLater(f"WhatsApp unreachable: {type(exc).__name__}: {exc}", provider=True), None
        finally:
            self._give_back(pacer, permit)
        if response.status_code == 200:
            self._throttled = 0
            try:
                provider_id = response.json()["messages"][0]["id"]
            except (ValueError, LookupError, TypeError):
                provider_id = None
            return Sent(provider_id=provider_id), None
        error = MetaError.from_response(response.status_code, response.content, response.headers)
        if error.is_rate_limit:
            self._throttled += 1
            backoff = min(60.0, 2.0**self._throttled)
            if error.code == PAIR_RATE and len(rates) > 1:  # this user only: the others go on
                backoff = max(self.settings.pair_interval_seconds, 1.0)
                await pacer.pause(rates[-1].key, error.retry_after or backoff)
            else:
                await pacer.pause(rates[0].key, error.retry_after or backoff)
            log.warning("whatsapp: %s; delivery %s waits", error.reason, item.delivery_id)
            return classify(error, fallback=self.fallback, backoff=backoff), error
        if error.is_auth:
            log.error(
                "whatsapp: Meta refused the access token (%s); check channels.whatsapp.token", error.reason
            )
        return classify(error, fallback=self.fallback), error

    def _give_back(self, pacer: Pacer, permit: Any) -> None:
        """Meta has answered: the slot frees one period from now, given back in the background so the
        outcome need not wait for that Redis round trip (a later release only frees it later)."""
        if permit is None:
            return
        task = asyncio.ensure_future(self._release(pacer, permit))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    @staticmethod
    async def _release(pacer: Pacer, permit: Any) -> None:
        """A failure here must not turn a message Meta took into a retry (it would go out twice); the
        slot frees itself after its lease."""
        try:
            await pacer.release(permit)
        except Exception as exc:
            log.warning("whatsapp: giving a pacing slot back failed: %r", exc)


def _digits(address: str) -> str:
    """``to``: the number's digits without "+" (E.164), from an address as the hub stores it."""
    return address[1:] if _STORED.fullmatch(address) else normalize_msisdn(address)[1:]


CHANNEL = WhatsAppChannel
