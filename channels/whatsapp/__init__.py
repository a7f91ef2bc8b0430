"""WhatsApp adapter on the WhatsApp Business Cloud API (Meta's Graph API), over httpx directly.

Why not pywa: it is a whole bot framework (its own webhook server or framework hooks, handler
registration, its own types); the hub needs one POST per send and the webhook parsing, and keeps control
of pacing, the tier and retries. httpx is already a dependency.

Answers to a citizen (``reply``, ``confirmation``) go as free text or interactive buttons inside the
24 h customer-service window, and as their template when Meta says the window is closed (131047); every
other kind goes as the template mapped to it in settings. Limits (this number's throughput, the pair rate
to one user) are declared to the hub's shared pacer; the messaging-limit tier is counted before each
template with the hub's shared count (DESIGN.md rule 5).

The package is split by concern: ``config`` (settings and templates), ``channel`` (addresses, forms,
pacing, sending), ``format`` (Content to WhatsApp markup, template parameters, interactive messages),
``errors`` (Meta's codes to outcomes), ``inbound`` (webhooks), ``limits`` (the counts the adapter keeps).
"""

from channels.whatsapp.channel import CHANNEL, WhatsAppChannel
from channels.whatsapp.config import WEBHOOK_PATH, TemplateSettings, WhatsAppSettings
from channels.whatsapp.errors import MetaError, classify
from channels.whatsapp.format import flatten, free_form, template_object, template_parameters, to_whatsapp
from channels.whatsapp.inbound import SIGNATURE_HEADER, signature

__all__ = [
    "CHANNEL",
    "SIGNATURE_HEADER",
    "WEBHOOK_PATH",
    "MetaError",
    "TemplateSettings",
    "WhatsAppChannel",
    "WhatsAppSettings",
    "classify",
    "flatten",
    "free_form",
    "signature",
    "template_object",
    "template_parameters",
    "to_whatsapp",
]
