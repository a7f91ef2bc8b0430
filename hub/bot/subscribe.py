"""Subscribing and leaving: ``langganan``, ``berhenti`` and the buttons that stand in for them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hub.bot.conversation import Conversation
from hub.store.models import Office, Subscription, Topic
from hub.subscriptions import set_state, unsubscribe_endpoint


async def cmd_subscribe(convo: Conversation, args: list[str]) -> None:
    """Subscribe to a named topic; without one, list the offices to choose from."""
    hub = convo.hub
    async with hub.db.session() as session:
        if args:
            topic = await find_topic(session, args[0])
            if topic is None:
                await convo.reply(convo.t("unknown_topic", arg=args[0]))
                return
        else:
            offices = (await session.execute(select(Office).order_by(Office.name))).scalars().all()
            lines = [f"{o.name}: {convo.prefix}langganan {o.id}" for o in offices]
            buttons = [{"text": o.name, "data": f"o:{o.id}"} for o in offices]
            await convo.reply(convo.t("choose_office") + "\n" + "\n".join(lines), buttons)
            return
    await subscribe(convo, topic)


async def subscribe(convo: Conversation, topic: Topic) -> None:
    target = await convo.here()
    async with convo.hub.db.transaction() as session:
        # Asking from one's own chat is the opt-in: nothing to confirm by another route.
        await set_state(session, topic.id, target.id, "confirmed")
    await convo.reply(convo.t("subscribed", topic=topic.name), to=target)


async def cmd_unsubscribe(convo: Conversation, args: list[str]) -> None:
    """Leave a named topic or ``semua``; bare, leave the only one (or all, where the channel says so)."""
    target = await convo.here()
    async with convo.hub.db.transaction() as session:
        if args and args[0].lower() in ("semua", "all"):
            topic_ids = None
            what = convo.t("unsub_all")
        elif args:
            topic = await find_topic(session, args[0])
            if topic is None:
                await convo.reply(convo.t("unknown_topic", arg=args[0]))
                return
            topic_ids, what = [topic.id], topic.name
        else:
            rows = (
                (
                    await session.execute(
                        select(Topic)
                        .join(Subscription, Subscription.topic_id == Topic.id)
                        .where(Subscription.endpoint_id == target.id, Subscription.state == "confirmed")
                    )
                )
                .scalars()
                .all()
            )
            if not rows:
                await convo.reply(convo.t("not_subscribed"))
                return
            if len(rows) == 1 or convo.channel.capabilities.bare_stop_leaves_all:
                topic_ids, what = None, convo.t("unsub_all")
            else:
                lines = [f"{t.name}: {convo.prefix}berhenti {t.slug}" for t in rows]
                buttons = [{"text": t.name, "data": f"u:{t.id}"} for t in rows]
                buttons.append({"text": convo.t("unsub_all"), "data": "u:all"})
                await convo.reply(convo.t("choose_unsub") + "\n" + "\n".join(lines), buttons)
                return
        await unsubscribe_endpoint(session, target.id, topic_ids)
    await convo.reply(convo.t("unsubscribed", what=what), to=target)


async def button(convo: Conversation, data: str) -> None:
    """A pressed button: ``o:<office>`` lists its topics, ``s:<id>`` subscribes, ``u:<id|all>`` leaves."""
    kind, _, value = data.partition(":")
    async with convo.hub.db.session() as session:
        if kind == "o":
            office = await session.get(Office, value)
            if office is None:
                await convo.reply(convo.t("unknown_office", arg=value))
                return
            topics = (
                await session.execute(select(Topic).where(Topic.office_id == office.id).order_by(Topic.id))
            ).scalars()
            buttons = [{"text": t.name.split(": ")[-1], "data": f"s:{t.id}"} for t in topics]
            await convo.reply(convo.t("choose_topic", office=office.name), buttons)
            return
        if kind == "s" and value.isdigit():
            topic = await session.get(Topic, int(value))
            if topic is not None:
                await subscribe(convo, topic)
                return
        if kind == "u":
            topic = await session.get(Topic, int(value)) if value.isdigit() else None
            await cmd_unsubscribe(convo, [topic.slug if topic else "semua"])
            return
    await convo.not_understood()


async def find_topic(session: Any, text: str) -> Topic | None:
    """A topic by slug, or by id when the citizen typed a number."""
    text = text.strip().lower()
    topic = await session.scalar(select(Topic).where(Topic.slug == text))
    if topic is None and text.isdigit():
        topic = await session.get(Topic, int(text))
    return topic
