"""``lacak KODE PIN``: an application's status, only in a private chat, with PIN guessing held down.

A PIN has six digits, so guesses are held at three levels (docs/security.md, "Limits"):

* per sender: ``SENDER_GUESSES`` wrong PINs per ``GUESS_WINDOW`` seconds from one chat or number;
* per case reference: ``CASE_GUESSES`` wrong PINs per ``GUESS_WINDOW`` from everyone together;
* per case, for good: after ``applicants.PIN_LOCK_AFTER`` wrong PINs the case is locked, in the database.

The first two are sliding windows in Redis, shared by every process: a guess takes a slot of both in one
script *before* its PIN is compared, so of any number of guesses racing exactly the limit are compared; a
right PIN gives its slots back. Redis keys hold a keyed hash of the sender and the reference, never either
in clear. Without Redis the database's lock still holds.
"""

from __future__ import annotations

import contextlib
import os

from hub import applicants, signing
from hub.bot.conversation import Conversation
from hub.context import Hub
from hub.logs import log
from hub.privacy import mask
from hub.queue import REDIS_DOWN
from hub.ratelimit import SlidingWindow, give_back, take_all
from hub.store.models import Endpoint

SENDER_GUESSES = 5  # wrong PINs allowed per sender ...
CASE_GUESSES = 10  # ... and per case reference, from all senders together ...
GUESS_WINDOW = 15 * 60  # ... per this many seconds (sliding)


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


def guess_slots(hub: Hub, channel: str, sender: str, reference: str) -> list[tuple[SlidingWindow, str]]:
    """The two windows a guess takes a slot of, each with the keyed hash it is counted under."""
    assert hub.redis is not None
    prefix = hub.settings.redis.key_prefix
    who = signing.digest(hub.secret, f"pin-sender:{channel}:{sender}")[:32]
    case = signing.digest(hub.secret, f"pin-case:{reference.strip()}")[:32]
    return [
        (SlidingWindow(hub.redis, prefix, "pin-sender", SENDER_GUESSES, GUESS_WINDOW), who),
        (SlidingWindow(hub.redis, prefix, "pin-case", CASE_GUESSES, GUESS_WINDOW), case),
    ]


async def _track(convo: Conversation, args: list[str], *, to: Endpoint) -> None:
    hub, record = convo.hub, convo.record
    sender = record.sender or record.address
    redis, slots, member = hub.redis, None, os.urandom(8).hex()
    if redis is not None:
        slots = guess_slots(hub, record.channel, sender, args[0])
        try:
            if await take_all(redis, slots, member):
                await convo.reply(convo.t("track_limited"), to=to)
                return
        except REDIS_DOWN:
            slots = None  # the case's lock in the database still holds
            log.warning("track_limits_unavailable", reason="redis down; PINs checked against the case lock")
    checked = await applicants.check_pin(hub, args[0], args[1])
    if checked.outcome == "locked":
        await convo.reply(convo.t("track_locked"), to=to)
        return
    if checked.case is None:
        log.info("track_failed", channel=record.channel, sender=mask(record.sender, convo.channel))
        await convo.reply(convo.t("track_wrong"), to=to)
        return
    if redis is not None and slots is not None:
        with contextlib.suppress(*REDIS_DOWN):  # a right PIN is answered even if its slots stay taken
            await give_back(redis, slots, member)
    case = checked.case
    # Only the chat of the person who proved the PIN: their own (``to`` is always ``convo.person()``).
    await applicants.link_endpoint(hub, case.id, record.channel, to.address, locale=convo.locale)
    await convo.reply(
        convo.t(
            "track_status",
            document=case.document,
            reference=case.reference,
            status=convo.status_word(case.status),
        ),
        to=to,
    )
