"""The ``[channels.whatsapp]`` table and its ``templates.<kind>`` tables, validated at start.

Facts behind the limits (docs/whatsapp.md has the sources): throughput is 80 messages/s per business
number by default, raised by Meta up to 1,000
(https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput);
the messaging limit counts unique users reached by business-initiated messages in a moving 24 h: 250,
2,000, 10,000, 100,000 or unlimited
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messaging-limits).
Outside the 24 h customer-service window only approved templates may be sent, which is why every kind
the hub sends unprompted needs one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.base import ChannelSettings

WEBHOOK_PATH = "/v1/channels/whatsapp/webhook"

#: Kinds the hub sends on its own initiative: always as a template, so each must have one.
TEMPLATE_KINDS = ("announcement", "correction", "applicant")
#: Kinds that answer a citizen: free text inside the 24 h window; their template is the fallback for
#: 131047 (re-engagement required), used only when one is configured.
ANSWER_KINDS = ("reply", "confirmation")

#: Content fields a template parameter may name.
ParameterSource = Literal["subject", "text"]


class TemplateSettings(BaseModel):
    """One approved message template (WhatsApp Manager), and which Content fields fill its ``{{n}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Meta's template names are lowercase letters, digits and underscores.
    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    #: In the order of the template body's ``{{1}}``, ``{{2}}``, ...
    parameters: list[ParameterSource] = Field(default_factory=lambda: ["text"], max_length=10)
    #: Hub locale → the template language code it was approved in (Meta's codes: ``id``, ``en``, ``en_US``).
    languages: dict[str, str] = Field(default_factory=lambda: {"id": "id", "en": "en"}, min_length=1)
    #: The parameters together, in characters: a template body with its parameters filled in holds at
    #: most 1,024 (Meta refuses a longer one with 132005), and the template's own words take the rest.
    max_length: int = Field(900, ge=16, le=1024)

    def language(self, locale: str) -> str:
        """The template language for a hub locale: its own, else Indonesian, else the first configured."""
        return self.languages.get(locale) or self.languages.get("id") or next(iter(self.languages.values()))


class WhatsAppSettings(ChannelSettings):
    """``[channels.whatsapp]``."""

    #: A system user's access token; put it in the environment (``HUB_CHANNELS__WHATSAPP__TOKEN``).
    token: str
    #: The business phone number's id (WhatsApp Manager → API setup), not the number itself.
    phone_number_id: str = Field(pattern=r"^[0-9]{1,32}$")
    api_version: str = Field("v23.0", pattern=r"^v[0-9]+\.[0-9]+$")
    #: Another Graph API server (a test's fake); default Meta's.
    base_url: str = "https://graph.facebook.com"
    #: The app secret: every webhook POST must carry its HMAC-SHA256 (``HUB_CHANNELS__WHATSAPP__APP_SECRET``).
    app_secret: str
    #: What Meta echoes when the webhook is registered (``HUB_CHANNELS__WHATSAPP__VERIFY_TOKEN``).
    verify_token: str
    #: Messages per second for this number, shared by every worker through Redis.
    rate_per_second: float = Field(80.0, gt=0, le=1000)
    #: Pace this fraction under ``rate_per_second``. 0 holds the limit: the shared pacer's slots free one
    #: period after Meta answered, so no second at Meta holds more (hub/ratelimit.py).
    safety_margin: float = Field(0.0, ge=0, lt=1)
    #: One message per this many seconds to one user (Meta's pair rate limit); 0 turns it off.
    pair_interval_seconds: float = Field(6.0, ge=0)
    #: Unique users reached by templates per window: the portfolio's tier; 0 means unlimited.
    messaging_limit: Literal[0, 250, 2000, 10000, 100000] = 250
    messaging_limit_window_seconds: float = Field(86400.0, gt=0)
    #: When a send finds the tier full, try again after this many seconds; unset: when the window frees.
    tier_retry_seconds: float | None = Field(None, gt=0)
    #: Numbers WhatsApp cannot deliver to (131026) are tried once on this channel instead (e.g. "sms").
    fallback_channel: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")
    templates: dict[str, TemplateSettings] = Field(default_factory=dict)
    #: Sends in flight per process, all batches together.
    concurrency: int = Field(32, ge=1)
    #: HTTP connections to the Graph API per process. Over HTTP/2 each carries many requests at once;
    #: over HTTP/1.1 (a plain-http test server) one each, so sends per second ≤ connections / latency.
    connections: int = Field(8, ge=1)
    #: HTTP/2 to Meta (h2, installed with the project's dependencies); a plain-http URL uses HTTP/1.1.
    http2: bool = True
    request_timeout: float = Field(10.0, gt=0)
    #: Inbound messages answered per number per minute, all processes together (0: no limit).
    inbound_per_minute: int = Field(20, ge=0)

    @field_validator("templates", mode="before")
    @classmethod
    def _json_templates(cls, value: Any) -> Any:
        """An environment variable holds the table as JSON text."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"expected template tables or JSON: {exc}") from None
        return value


def missing_templates(table: Mapping[str, Any]) -> list[str]:
    """One line per kind the hub sends as a template that has none (``...templates.announcement: missing``).

    A kind without one would fail every send of it; the hub stops at start instead.
    """
    templates = table.get("templates") or {}
    if isinstance(templates, str):
        try:
            templates = json.loads(templates)
        except ValueError:
            return []  # the model reports the unreadable JSON
    if not isinstance(templates, Mapping):
        return []
    return [
        f"channels.whatsapp.templates.{kind}: missing" for kind in TEMPLATE_KINDS if kind not in templates
    ]
