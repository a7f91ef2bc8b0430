"""Cancel as a sender sees it: one Redis read per message per window, and still no send after cancel returns.

docs/design.md, "Cancel": after `hub cancel` returns, a worker sends at most what it had already handed to
the adapter. Senders share one read of the cancel key per message for ``CANCEL_FRESH`` seconds
(``hub.delivery.cancels.CancelWatch``); ``delivery.cancel`` returns no sooner than that after it set the key.
"""

from __future__ import annotations

import pytest

from channels.testing import ScriptedChannel
from hub import announcements, delivery, subscriptions
from hub.delivery.cancels import cancel_watch
from hub.store.models import Message
from tests.conftest import make_settings, start_hub


@pytest.fixture
async def shub(database, redis_url, smtp):
    url, schema = database
    hub = await start_hub(
        make_settings(url, redis_url, smtp[1], schema), extra_channels={"scripted": ScriptedChannel()}
    )
    try:
        yield hub
    finally:
        await hub.close()


async def _message(hub) -> int:
    await subscriptions.subscribe(hub, "kota-serang", "scripted", "warga-0", confirmed=True)
    req = announcements.AnnouncementInput(
        template="free_text", topics=["kota-serang"], data={"title": "Uji", "text": "Pesan uji."}
    )
    _, message = await announcements.create(hub, req, publish=True)
    return message.id


async def test_a_check_after_cancel_returned_sees_it_despite_a_shared_read(shub):
    message_id = await _message(shub)
    watch = cancel_watch(shub)
    reads = 0
    real = watch._read

    async def counted(mid: int) -> bool | None:
        nonlocal reads
        reads += 1
        return await real(mid)

    watch._read = counted  # type: ignore[method-assign]
    assert not await watch.cancelled(message_id)
    for _ in range(50):  # hand-offs right after share that read
        assert not await watch.cancelled(message_id)
    assert reads == 1

    async with shub.db.session() as session:
        announcement_id = (await session.get(Message, message_id)).announcement_id
    await announcements.cancel(shub, announcement_id)

    assert await watch.cancelled(message_id)  # the read from before cancel is no longer trusted
    assert reads == 2
    assert (await delivery.status(shub, message_id))["progress"] == "cancelled"
