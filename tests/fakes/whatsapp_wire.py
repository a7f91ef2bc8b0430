"""Meta's wire formats for the fake Cloud API: Graph error objects, message validation, webhook bodies.

Kept apart from the server (tests/fakes/whatsapp_cloud.py) so each stays one job: this module knows what
Meta accepts and how Meta's JSON looks, the server knows time, limits and delivery. Sources for every rule
are in docs/whatsapp.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

#: Meta's error table (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes):
#: code → (title, details, HTTP status).
ERRORS: dict[int, tuple[str, str, int]] = {
    0: ("AuthException", "We were unable to authenticate the app user.", 401),
    4: ("Application request limit reached", "The app has reached its API call rate limit.", 400),
    100: ("Invalid parameter", "The request included one or more unsupported or misspelled parameters.", 400),
    190: ("Invalid OAuth access token - Cannot parse access token", "Access token has expired.", 401),
    80007: ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit.", 400),
    130429: (
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number "
        "in a short period of time",
        400,
    ),
    131000: ("Something went wrong", "Message failed to send due to an unknown error.", 500),
    131008: ("Required parameter is missing", "The request is missing a required parameter.", 400),
    131009: ("Parameter value is not valid", "One or more parameter values are invalid.", 400),
    131026: (
        "Message Undeliverable",
        "Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp "
        "phone number.",
        400,
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied "
        "to this number.",
        400,
    ),
    131048: (
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent from "
        "this phone number. This may be because too many previous messages were blocked or flagged as spam.",
        400,
    ),
    131053: ("Media upload error", "Unable to upload the media used in the message.", 400),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number to the "
        "same phone number in a short period of time.",
        400,
    ),
    132000: (
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values included in the request did not match the number of "
        "variable parameters defined in the template.",
        400,
    ),
    132001: (
        "Template does not exist",
        "The template does not exist in the specified language or the template has not been approved.",
        404,
    ),
    132005: ("Template Hydrated Text Too Long", "Translated text is too long.", 400),
    132018: (
        "There was an issue with the parameters in your template.",
        "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        400,
    ),
}
#: Codes the fake counts as rate-limit answers (throughput, pair rate, messaging limit, forced 4/80007).
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131048, 131056})

MAX_TEXT_BODY = 4096  # text.body
MAX_TEMPLATE_BODY = 1024  # a template's body text after its parameters are filled in
MAX_INTERACTIVE_BODY = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_HEADER = MAX_FOOTER = 60
MAX_LIST_BODY = 4096
MAX_LIST_BUTTON = 20
MAX_SECTIONS = MAX_ROWS = 10  # up to 10 sections, 10 rows across them
MAX_SECTION_TITLE = MAX_ROW_TITLE = 24
MAX_ROW_ID = 200
MAX_ROW_DESCRIPTION = 72
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_BAD_PARAM = re.compile(r"[\n\t]| {5,}")


class MetaError(Exception):
    """One Graph API error answer: ``{"error": {...}}`` with Meta's HTTP status for the code."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        http_status: int | None = None,
        title: str | None = None,
    ) -> None:
        known_title, known_details, known_status = ERRORS.get(code, ("Unknown error", "", 400))
        self.code = code
        self.title = title or known_title
        self.details = details or known_details
        self.http_status = http_status or known_status
        self.headers: dict[str, str] = {}
        super().__init__(f"(#{code}) {self.title}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": f"(#{self.code}) {self.title}",
            "type": "OAuthException",
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": "A" + secrets.token_urlsafe(16),
        }
        return {"error": error}

    def webhook_error(self) -> dict[str, Any]:
        """The ``errors[]`` item of a failed status webhook."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }


@dataclass
class Template:
    """An approved message template as WhatsApp Manager would hold it, for one language."""

    name: str
    language: str
    body: str
    category: str = "UTILITY"
    status: str = "APPROVED"

    @property
    def parameter_count(self) -> int:
        return len(set(_PLACEHOLDER.findall(self.body)))

    def render(self, parameters: list[str]) -> str:
        return _PLACEHOLDER.sub(lambda m: parameters[int(m.group(1)) - 1], self.body)


@dataclass
class SentMessage:
    """One accepted send, as the recipient would see it."""

    id: str  # the wamid answered
    to: str
    type: str  # text | template | interactive
    text: str  # text.body, the rendered template body, or the interactive body text
    template: str | None = None
    language: str | None = None
    parameters: list[str] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (id, title): reply buttons or list rows
    interactive: str | None = None  # "button" (reply buttons) | "list"
    biz_opaque_callback_data: str | None = None
    business_initiated: bool = False  # sent outside the recipient's customer-service window
    at: float = 0.0
    payload: dict[str, Any] = field(default_factory=dict)


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or mapping.get(key) in (None, "", [], {}):
        raise MetaError(131008, f"The parameter {where}{key} is required.")
    return mapping[key]


def check_envelope(body: Any) -> tuple[str, str]:
    """The fields every message needs; returns (to, type)."""
    if not isinstance(body, dict):
        raise MetaError(100, "Request body must be a JSON object.")
    if _require(body, "messaging_product", "") != "whatsapp":
        raise MetaError(100, "Param messaging_product must be 'whatsapp'.")
    if body.get("recipient_type", "individual") != "individual":
        raise MetaError(100, "Param recipient_type must be 'individual'.")
    to = str(_require(body, "to", ""))
    if not to.isdigit() or not 8 <= len(to) <= 15:
        raise MetaError(100, "Param to must be a phone number in E.164 digits, without '+'.")
    kind = str(body.get("type", "text"))
    if kind not in ("text", "template", "interactive"):
        raise MetaError(100, f"Param type '{kind}' is not supported by this fake.")
    data = body.get("biz_opaque_callback_data")
    if data is not None and (not isinstance(data, str) or len(data) > 512):
        raise MetaError(100, "Param biz_opaque_callback_data must be a string of at most 512 characters.")
    return to, kind


def parse_text(body: dict[str, Any]) -> str:
    text = _require(_require(body, "text", ""), "body", "text.")
    if not isinstance(text, str) or len(text) > MAX_TEXT_BODY:
        raise MetaError(100, f"Param text.body must be a string of at most {MAX_TEXT_BODY} characters.")
    return text


def parse_template(body: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(name, language code, body parameter texts) of a template message."""
    template = _require(body, "template", "")
    name = str(_require(template, "name", "template."))
    language = _require(template, "language", "template.")
    code = str(_require(language, "code", "template.language."))
    parameters: list[str] = []
    for component in template.get("components") or []:
        if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
            raise MetaError(100, "Param template.components[].type must be header, body or button.")
        if component["type"] != "body":
            raise MetaError(132000, "This fake's templates have a body only; header/button parameters given.")
        for parameter in component.get("parameters") or []:
            if not isinstance(parameter, dict) or parameter.get("type") != "text":
                raise MetaError(100, "Param template.components[].parameters[].type must be 'text'.")
            text = parameter.get("text")
            if not isinstance(text, str) or not text.strip():
                raise MetaError(131008, "The parameter template.components[].parameters[].text is required.")
            parameters.append(text)
    return name, code, parameters


def check_template_parameters(template: Template, parameters: list[str]) -> str:
    """Meta's checks of a template send's parameters; returns the rendered body."""
    expected = template.parameter_count
    if len(parameters) != expected:
        raise MetaError(
            132000,
            f"body: number of localizable_params ({len(parameters)}) does not match the expected "
            f"number of params ({expected})",
        )
    for text in parameters:
        if _BAD_PARAM.search(text):
            raise MetaError(132018)
    rendered = template.render(parameters)
    if len(rendered) > MAX_TEMPLATE_BODY:
        raise MetaError(132005, f"The body is {len(rendered)} characters; at most {MAX_TEMPLATE_BODY}.")
    return rendered


def _text_field(value: Any, where: str, limit: int, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MetaError(131009, f"Param {where} must be 1 to {limit} characters.")
    return value


def parse_interactive(body: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]]]:
    """(interactive type, body text, choices as (id, title)) of a reply-buttons or list message."""
    interactive = _require(body, "interactive", "")
    kind = interactive.get("type")
    if kind not in ("button", "list"):
        raise MetaError(100, "This fake supports interactive types 'button' and 'list' only.")
    limit = MAX_INTERACTIVE_BODY if kind == "button" else MAX_LIST_BODY
    text = _text_field(
        _require(interactive, "body", "interactive.").get("text"), "interactive.body.text", limit
    )
    header = interactive.get("header")
    if header is not None:
        if not isinstance(header, dict) or header.get("type") != "text":
            raise MetaError(100, "This fake supports text headers only.")
        _text_field(header.get("text"), "interactive.header.text", MAX_HEADER)
    footer = interactive.get("footer")
    if footer is not None:
        _text_field(
            footer.get("text") if isinstance(footer, dict) else None, "interactive.footer.text", MAX_FOOTER
        )
    action = _require(interactive, "action", "interactive.")
    choices = _buttons(action) if kind == "button" else _list_rows(action)
    if len({c[0] for c in choices}) != len(choices) or len({c[1] for c in choices}) != len(choices):
        raise MetaError(131009, "Button/row ids and titles must be unique.")
    return kind, text, choices


def _buttons(action: dict[str, Any]) -> list[tuple[str, str]]:
    raw = _require(action, "buttons", "interactive.action.")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BUTTONS:
        raise MetaError(131009, f"Param interactive.action.buttons must have 1 to {MAX_BUTTONS} buttons.")
    buttons: list[tuple[str, str]] = []
    for button in raw:
        reply = button.get("reply") if isinstance(button, dict) and button.get("type") == "reply" else None
        if not isinstance(reply, dict):
            raise MetaError(100, "Param interactive.action.buttons[] must be {'type': 'reply', 'reply': {}}.")
        button_id = _text_field(reply.get("id"), "button id", MAX_BUTTON_ID)
        buttons.append((button_id, _text_field(reply.get("title"), "button title", MAX_BUTTON_TITLE)))
    return buttons


def _list_rows(action: dict[str, Any]) -> list[tuple[str, str]]:
    _text_field(action.get("button"), "interactive.action.button", MAX_LIST_BUTTON)
    sections = _require(action, "sections", "interactive.action.")
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_SECTIONS:
        raise MetaError(131009, f"Param interactive.action.sections must have 1 to {MAX_SECTIONS} sections.")
    rows: list[tuple[str, str]] = []
    for section in sections:
        if not isinstance(section, dict):
            raise MetaError(100, "Param interactive.action.sections[] must be objects.")
        title = section.get("title")
        _text_field(title, "section title", MAX_SECTION_TITLE, required=len(sections) > 1)
        for row in section.get("rows") or []:
            if not isinstance(row, dict):
                raise MetaError(100, "Param interactive.action.sections[].rows[] must be objects.")
            _text_field(row.get("description"), "row description", MAX_ROW_DESCRIPTION, required=False)
            row_id = _text_field(row.get("id"), "row id", MAX_ROW_ID)
            rows.append((row_id, _text_field(row.get("title"), "row title", MAX_ROW_TITLE)))
    if not 1 <= len(rows) <= MAX_ROWS:
        raise MetaError(131009, f"A list message has 1 to {MAX_ROWS} rows across its sections.")
    return rows


# --------------------------------------------------------------------------------------------------------
# Webhook bodies and signature


def sign(app_secret: str, raw: bytes) -> str:
    """The ``X-Hub-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    """Meta escapes non-ASCII characters as ``\\uXXXX`` in webhook bodies; the signature covers that."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def envelope(waba_id: str, metadata: dict[str, str], value: dict[str, Any]) -> dict[str, Any]:
    """One ``messages`` field change, wrapped as Meta wraps every WhatsApp webhook."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba_id,
                "changes": [
                    {
                        "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def status_value(
    message: SentMessage, status: str, timestamp: int, error: MetaError | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": message.id,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": message.to,
    }
    if message.biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = message.biz_opaque_callback_data
    if status in ("sent", "delivered") and error is None:
        category = "utility" if message.business_initiated else "service"
        item["pricing"] = {"billable": category != "service", "pricing_model": "PMP", "category": category}
    if error is not None:
        item["errors"] = [error.webhook_error()]
    return {"statuses": [item]}


def inbound_value(number: str, name: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"contacts": [{"profile": {"name": name}, "wa_id": number}], "messages": [message]}
