"""Webhooks: Meta's verification handshake, signed notifications, statuses and citizens' messages.

Meta registers a webhook with a GET carrying ``hub.mode=subscribe``, ``hub.verify_token`` and
``hub.challenge``, and expects the challenge back; every notification after that is a POST signed in
``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the app secret>``
(https://developers.facebook.com/docs/graph-api/webhooks/). The signature is checked on
the raw bytes before anything is parsed.

Statuses (sent, delivered, read, failed) may arrive out of order and more than once; each carries the
``biz_opaque_callback_data`` the send set, the delivery id, so no lookup by message id is needed
(https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status/).
Citizens' messages become the same records as SMS keywords (``DAFTAR``, ``JAM``, ``BERHENTI``...): one
command table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from channels.base import Channel, Inbound, WebhookRejected, WebhookRequest, WebhookResponse
from channels.sms import parse_mo
from channels.whatsapp.errors import UNDELIVERABLE
from channels.whatsapp.limits import PerNumber, Seen

log = logging.getLogger("channels.whatsapp")

SIGNATURE_HEADER = "x-hub-signature-256"
RECEIPT_STATUSES = {"delivered": "delivered", "read": "read", "failed": "failed"}


def signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list in the payload; anything else in it is skipped (Meta sends objects)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _message_values(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``entry[].changes[].value`` of the ``messages`` field (Meta may batch several)."""
    return [
        _dict(change.get("value"))
        for entry in _dicts(payload.get("entry"))
        for change in _dicts(entry.get("changes"))
        if change.get("field") == "messages"
    ]


class WhatsAppInbound:
    """The inbound half of ``WhatsAppChannel``: webhook calls in, ``Inbound`` records out."""

    name: str
    phone_number_id: str
    app_secret: str
    verify_token: str
    fallback: str | None
    inbound_limit: PerNumber
    seen: Seen

    async def handle_webhook(self, request: WebhookRequest) -> tuple[list[Inbound], WebhookResponse]:
        if not request.body and "hub.mode" in request.query:
            return [], self._verify(request.query)
        self._check_signature(request)
        payload = json.loads(request.body)
        if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
            return [], WebhookResponse(200, "")
        records: list[Inbound] = []
        for value in _message_values(payload):
            number_id = str(_dict(value.get("metadata")).get("phone_number_id", ""))
            if number_id != self.phone_number_id:
                log.info("whatsapp: ignoring a notification for another phone number id")
                continue
            for error in _dicts(value.get("errors")):
                log.warning("whatsapp: Meta reports error %s: %s", error.get("code"), error.get("title"))
            records += self._receipts(_dicts(value.get("statuses")))
            records += await self._messages(_dicts(value.get("messages")))
        return records, WebhookResponse(200, "")

    def _verify(self, query: Mapping[str, str]) -> WebhookResponse:
        """The subscription handshake: the challenge back when the token is ours."""
        token = query.get("hub.verify_token", "")
        if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            token.encode(), self.verify_token.encode()
        ):
            raise WebhookRejected("WhatsApp webhook verification with a wrong verify token")
        return WebhookResponse(200, query.get("hub.challenge", ""))

    def _check_signature(self, request: WebhookRequest) -> None:
        given = _header(request.headers, SIGNATURE_HEADER)
        if not given:
            raise WebhookRejected("WhatsApp webhook without X-Hub-Signature-256")
        if not hmac.compare_digest(given.encode(), signature(self.app_secret, request.body).encode()):
            raise WebhookRejected("WhatsApp webhook with a wrong X-Hub-Signature-256")

    def _receipts(self, statuses: Any) -> list[Inbound]:
        records = []
        for status in statuses:
            state = RECEIPT_STATUSES.get(str(status.get("status", "")))
            raw = str(status.get("biz_opaque_callback_data") or "")
            if state is None:  # "sent": the send's own answer recorded it already
                continue
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
                continue  # a message the hub did not send (or sent without a delivery id)
            if state != "failed":
                records.append(
                    Inbound(channel=self.name, kind="receipt", delivery_id=int(raw), receipt_status=state)  # type: ignore[arg-type]
                )
                continue
            errors = _dicts(status.get("errors"))
            codes = [e.get("code") for e in errors]
            who = Channel.mask_phone(str(status.get("recipient_id", "")))
            log.info("whatsapp: delivery %s to %s failed at Meta (%s)", raw, who, codes or "-")
            reason = "; ".join(
                f"WhatsApp error {e.get('code')}: {e.get('title') or e.get('message') or ''}".strip()
                for e in errors
            )
            # Undeliverable reported late (Meta does either): gone, as the same answer at the send is.
            gone = UNDELIVERABLE in codes
            records.append(
                Inbound(
                    channel=self.name,
                    kind="receipt",
                    delivery_id=int(raw),
                    receipt_status="gone" if gone else "failed",
                    text=reason[:500],
                    fallback=self.fallback if gone else None,
                )
            )
        return records

    async def _messages(self, messages: Any) -> list[Inbound]:
        records = []
        for message in messages:
            sender = str(message.get("from", ""))
            if not (sender.isascii() and sender.isdigit()):
                continue
            address = "+" + sender
            record = self._message_record(address, message)
            if record is None:
                log.info(
                    "whatsapp: ignoring a %s message from %s",
                    message.get("type"),
                    Channel.mask_phone(address),
                )
                continue
            message_id = str(message.get("id", ""))
            if message_id and not await self.seen.first(message_id):
                continue  # Meta delivered this notification again
            if not await self.inbound_limit.admit(address):
                log.warning(
                    "whatsapp: messages from %s over the per-number limit; not answered",
                    Channel.mask_phone(address),
                )
                continue
            records.append(record)
        return records

    def _message_record(self, address: str, message: Mapping[str, Any]) -> Inbound | None:
        """A text as a keyword command or text; a pressed button as a button record."""
        kind = message.get("type")
        if kind == "text":
            return parse_mo(address, str(_dict(message.get("text")).get("body", "")), channel=self.name)
        if kind == "interactive":
            interactive = _dict(message.get("interactive"))
            reply = interactive.get("button_reply") or interactive.get("list_reply")
            if isinstance(reply, dict) and reply.get("id"):
                return Inbound(
                    channel=self.name, kind="button", address=address, sender=address, data=str(reply["id"])
                )
            return None
        if kind == "button":  # a template's quick-reply button: its payload, or a keyword on it
            button = _dict(message.get("button"))
            said = parse_mo(address, str(button.get("text", "")), channel=self.name)
            if said.kind == "command" or not button.get("payload"):
                return said
            return Inbound(
                channel=self.name, kind="button", address=address, sender=address, data=str(button["payload"])
            )
        return None
