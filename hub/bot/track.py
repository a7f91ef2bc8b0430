"""``lacak KODE PIN``: an application's status, only in a private chat, with wrong guesses rate-limited."""

from __future__ import annotations

from hub import applicants
from hub.bot.conversation import Conversation
from hub.logs import log
from hub.privacy import mask
from hub.store.models import Endpoint

TRACK_LIMIT = 5  # wrong guesses allowed per sender ...
TRACK_WINDOW = 15 * 60  # ... per this many seconds


async def cmd_track(convo: Conversation, args: list[str]) -> None:
    """Asked in a group, answer privately where the channel can start a direct chat, else refuse."""
    if len(args) < 2:
        await convo.reply(convo.t("track_usage"))
        return
    if not convo.private:
        if convo.channel.capabilities.initiates_direct and convo.record.sender:
            await convo.reply(convo.t("track_moved"))
            await _track(convo, args, to=await convo.person())
        else:
            await convo.reply(convo.t("track_private"))
        return
    await _track(convo, args, to=await convo.person())


async def _track(convo: Conversation, args: list[str], *, to: Endpoint) -> None:
    hub = convo.hub
    who = convo.record.sender or convo.record.address
    key = f"{hub.settings.redis.key_prefix}:track:{convo.record.channel}:{who}"
    failures = int(await hub.redis.get(key) or 0) if hub.redis else 0
    if failures >= TRACK_LIMIT:
        await convo.reply(convo.t("track_limited"), to=to)
        return
    case = await applicants.track(hub, args[0], args[1])
    if case is None:
        if hub.redis:
            async with hub.redis.pipeline(transaction=True) as pipe:
                await pipe.incr(key).expire(key, TRACK_WINDOW).execute()
        sender = mask(convo.record.sender, convo.channel)
        log.info("track_failed", channel=convo.record.channel, sender=sender)
        await convo.reply(convo.t("track_wrong"), to=to)
        return
    await applicants.link_endpoint(hub, case.id, convo.record.channel, to.address, locale=convo.locale)
    await convo.reply(
        convo.t(
            "track_status",
            document=case.document,
            reference=case.reference,
            status=convo.status_word(case.status),
        ),
        to=to,
    )
