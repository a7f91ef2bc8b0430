"""The ``[channels.sms]`` table and its ``[[channels.sms.gateways]]``, as pydantic models.

Values from the environment arrive as strings and are converted here; a wrong key is named in full
(``channels.sms.gateways.0.url: ...``). ``HUB_CHANNELS__SMS__GATEWAYS`` may hold the list as JSON.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from channels.base import ChannelSettings

DEFAULT_TIMEOUT = 10.0


class _Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Shown in logs and used in the shared rate key; default: the driver and its position.
    name: str | None = None
    #: Share of sends this gateway takes while every gateway is healthy.
    weight: float = Field(1.0, ge=0)
    rate_per_second: float = Field(10.0, gt=0)
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0)
    #: Sender id; default: the channel's ``sender``.
    sender: str | None = None


class KannelGatewaySettings(_Gateway):
    """Kannel's smsbox ``/cgi-bin/sendsms``."""

    driver: Literal["kannel"]
    url: str
    username: str
    password: str
    smsc: str = ""
    #: Which delivery reports Kannel sends back (31: all).
    dlr_mask: int = 31


class HttpGatewaySettings(_Gateway):
    """An aggregator's JSON API, described by a URL, headers, a body template and the id's path."""

    driver: Literal["http"]
    url: str
    body: dict[str, Any] | str
    method: str = "POST"
    headers: dict[str, str] = {}
    id_path: str = ""
    retry_statuses: list[int] | None = None
    reject_statuses: list[int] = []


GatewaySettings = Annotated[KannelGatewaySettings | HttpGatewaySettings, Field(discriminator="driver")]


class SmsSettings(ChannelSettings):
    """``[channels.sms]``."""

    #: Sender id or short code (registered with the operators for +62 numbers).
    sender: str = ""
    #: The number citizens text keywords to (shown in help texts).
    number: str = ""
    #: Longer texts are refused, not silently billed many times over.
    max_segments: int = Field(6, ge=1)
    #: Curly quotes, dashes, accents to GSM-7 when that avoids UCS-2.
    transliterate: bool = False
    gateways: list[GatewaySettings] = Field(min_length=1)
    #: Signs the per-delivery token in delivery-report URLs (environment: HUB_CHANNELS__SMS__DLR_SECRET).
    dlr_secret: str
    #: The ``k`` parameter Kannel's sms-service get-url must carry for inbound SMS.
    mo_secret: str = ""
    #: Sends in flight per process, all batches together.
    concurrency: int = Field(16, ge=1)
    #: Consecutive provider failures that open a gateway's circuit (shared by every worker).
    failure_threshold: int = Field(5, ge=1)
    #: How long an open circuit stays open before one probe is let through.
    cooloff_seconds: float = Field(30.0, gt=0)
    #: Inbound SMS taken from one number per minute (0: no limit).
    mo_per_minute: int = Field(10, ge=0)

    @field_validator("gateways", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        """An environment variable holds the list as JSON text."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"expected a list of gateway tables or JSON: {exc}") from None
        return value
