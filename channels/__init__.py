"""Channel adapters behind one small interface (``channels.base``), exported here.

An adapter implements ``Channel``: it declares what it can do in ``capabilities``, validates its
``[channels.<name>]`` table with its ``settings_model``, sends batches and says what each send came to
with one of the outcomes, and turns inbound updates into ``Inbound`` records. ``channels.testing``
holds a scripted channel for tests.
"""

from channels.base import (
    Button,
    Capabilities,
    Channel,
    ChannelSettings,
    ChannelSettingsError,
    Content,
    EndpointKind,
    Inbound,
    InboundSink,
    InvalidAddress,
    Lane,
    Listening,
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
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    load_channel_class,
    outcome_of_error,
)

__all__ = [
    "Button",
    "Capabilities",
    "Channel",
    "ChannelSettings",
    "ChannelSettingsError",
    "Content",
    "EndpointKind",
    "Inbound",
    "InboundSink",
    "InvalidAddress",
    "Lane",
    "Listening",
    "Moved",
    "NoPacing",
    "Outbound",
    "Outcome",
    "Pacer",
    "Paused",
    "Rate",
    "RecipientGone",
    "Rejected",
    "RetryLater",
    "Sent",
    "WebhookRejected",
    "WebhookRequest",
    "WebhookResponse",
    "load_channel_class",
    "outcome_of_error",
]
