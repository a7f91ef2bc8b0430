"""Sending a test to yourself: the announcement as rendered, by email, to the signed-in user's address only.

It is a one-off message of its own (kind ``test``, urgent lane) naming one endpoint, the way applicant
updates and bot replies name theirs: no topic, so no subscriber can receive it, and not tied to the
announcement, so its counts, cancel and correction never see it. The message and its audit row commit
together; the staff address becomes an endpoint without subscriptions (as an applicant's contact does).
"""

from __future__ import annotations

import dataclasses

from hub import announcements, delivery
from hub.console import audit
from hub.console.auth import Staff
from hub.context import Hub
from hub.errors import HubError, InvalidInput
from hub.subscriptions import endpoint_for

CHANNEL = "email"


class TrialRefused(InvalidInput):
    """No test can go out: ``code`` names why for the page (``ann.test.<code>``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def send_to_self(
    hub: Hub, staff: Staff, req: announcements.AnnouncementInput, locale: str, target: str = ""
) -> int:
    """Queue the rendered announcement to ``staff.email`` in ``locale`` (else Indonesian); its message id.

    ``target`` names what was tested in the audit row (``announcement:12``; empty for an unsaved form).
    """
    if CHANNEL not in hub.channels:
        raise TrialRefused("no_email", "the email channel is not enabled: there is nothing to send a test by")
    try:
        address = hub.channels[CHANNEL].normalize_address(staff.email)
    except (HubError, ValueError):
        raise TrialRefused("bad_address", "the signed-in user's email address cannot receive mail") from None
    prepared = await announcements.prepare(hub, req)
    if (CHANNEL, locale) not in prepared.renderings:
        locale = hub.settings.hub.default_locale
    draft = dataclasses.replace(
        prepared.draft,
        kind="test",
        lane="urgent",
        context={**prepared.draft.context, "unsubscribable": False},  # not subscribed: nothing to leave
        topic_ids=(),
        send_at=None,
        not_after=None,
        renditions=[(CHANNEL, locale)],
    )
    async with hub.db.transaction() as session:
        endpoint = await endpoint_for(session, CHANNEL, address, locale=locale, reactivate=False)
        if not endpoint.active:
            raise TrialRefused(
                "inactive", "mail to this address bounced before: the hub no longer sends to it"
            )
        message = await delivery.create_message(
            hub, dataclasses.replace(draft, endpoint_ids=[endpoint.id]), session=session
        )
        detail = {"channel": CHANNEL, "locale": locale, "message_id": message.id, "template": req.template}
        await audit.record(session, staff, "announcement.test_send", target, detail)
    await hub.queue.plan_soon(message.id, "urgent")
    return message.id
