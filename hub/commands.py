"""The citizens' bot: one implementation of every command, for every channel.

Telegram's ``/jam``, Matrix's ``!jam`` and the SMS keyword ``JAM`` all arrive here as the same neutral
``Inbound`` record; replies go out through the urgent lane like any other message. Bahasa Indonesia
first, English when the citizen's client or keyword is English.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select

from channels.base import Inbound
from hub import applicants, delivery
from hub.clock import utcnow
from hub.context import Hub
from hub.errors import NotFound
from hub.logs import log
from hub.privacy import mask
from hub.render import day_name, format_hours
from hub.store.models import Announcement, Endpoint, KeyValue, Office, Subscription, Topic
from hub.subscriptions import endpoint_for, set_state, subscriber_view, unsubscribe_endpoint

#: Every word the bot takes as a command, on every channel: ``word -> (command, language it implies)``.
#: Adapters hand over the raw first word (``/Jam``, ``!jam``, ``JAM.``); the vocabulary lives here once.
#: Indonesian words keep the citizen's language (their client's, or Indonesian); English ones answer in
#: English, whatever the client says.
VOCABULARY: dict[str, tuple[str, str | None]] = {
    "start": ("start", None),
    "mulai": ("start", None),
    "langganan": ("langganan", None),
    "daftar": ("langganan", None),
    "subscribe": ("langganan", "en"),
    "berhenti": ("berhenti", None),
    "stop": ("berhenti", None),
    "unsubscribe": ("berhenti", "en"),
    "jam": ("jam", None),
    "hours": ("jam", "en"),
    "layanan": ("layanan", None),
    "services": ("layanan", "en"),
    "lacak": ("lacak", None),
    "track": ("lacak", "en"),
    "bantuan": ("bantuan", None),
    "info": ("bantuan", None),
    "help": ("bantuan", "en"),
    "kelurahan": ("kelurahan", None),
    "relay": ("kelurahan", "en"),
    "dataku": ("dataku", None),
    "mydata": ("dataku", "en"),
    "hapus": ("hapus", None),
    "erase": ("hapus", "en"),
}
#: What may surround a command word: the channel's prefix, a Telegram ``@botname``, punctuation.
_WORD_EDGES = "/!#.,?:;"


def command_of(word: str) -> tuple[str, str | None] | None:
    """The command a first word names and the language it implies; None when it names none."""
    key = word.strip().split("@", 1)[0].strip(_WORD_EDGES).lower()
    return VOCABULARY.get(key)


TRACK_LIMIT = 5  # wrong guesses allowed per sender ...
TRACK_WINDOW = 15 * 60  # ... per this many seconds

TEXT: dict[str, dict[str, str]] = {
    "id": {
        "help": (
            "Layanan informasi Disdukcapil. Perintah:\n"
            "{p}langganan - berlangganan informasi kantor\n"
            "{p}berhenti - berhenti berlangganan\n"
            "{p}jam - jam layanan dan kuota\n"
            "{p}layanan - nomor layanan dan aplikasi\n"
            "{p}lacak KODE PIN - status permohonan Anda\n"
            "{p}dataku - data Anda yang kami simpan; {p}hapus - hapus data Anda\n"
            "{p}bantuan - pesan ini"
        ),
        "welcome": "Selamat datang di layanan informasi Disdukcapil.",
        "choose_office": "Pilih kantor:",
        "choose_topic": "Pilih topik dari {office}:",
        "subscribed": "Anda berlangganan: {topic}. Kirim {p}berhenti untuk berhenti.",
        "unsubscribed": "Anda berhenti berlangganan {what}.",
        "unsub_all": "semua topik",
        "not_subscribed": "Anda belum berlangganan topik apa pun.",
        "choose_unsub": "Pilih topik untuk berhenti berlangganan, atau kirim {p}berhenti semua:",
        "unknown_topic": 'Topik "{arg}" tidak dikenal. Kirim {p}langganan untuk melihat daftar.',
        "unknown_office": 'Kantor "{arg}" tidak dikenal.',
        "which_office": (
            "Kantor mana? Kirim {p}{cmd} NAMA_KANTOR, misalnya {p}{cmd} {example}. Kantor: {offices}"
        ),
        "no_hours": "Belum ada informasi jam layanan untuk {office}.",
        "hours": "Jam layanan {office}:",
        "quota": "Kuota: {n} orang per hari.",
        "no_services": "Belum ada informasi nomor layanan untuk {office}.",
        "services": "Layanan {office}:",
        "online_app": "Aplikasi daring: {app}",
        "track_usage": "Kirim {p}lacak KODE PIN, sesuai tanda terima permohonan Anda.",
        "track_private": "Demi keamanan, kirim {p}lacak hanya lewat pesan pribadi kepada saya.",
        "track_moved": "Saya akan menjawab lewat pesan pribadi.",
        "track_wrong": "Kode atau PIN tidak cocok.",
        "track_limited": "Terlalu banyak percobaan. Coba lagi nanti.",
        "track_status": (
            "Permohonan {document} {reference}: {status}. Anda akan menerima kabar berikutnya di sini."
        ),
        "linked": (
            "Permohonan {document} {reference} terhubung. Status: {status}. Kabar berikutnya dikirim ke sini."
        ),
        "bad_code": "Kode tidak dikenal atau sudah dipakai.",
        "relay_ok": "Grup ini terdaftar sebagai penerus informasi {office}. Terima kasih.",
        "relay_added": (
            "Terima kasih telah menambahkan saya. Admin kelurahan: kirim {p}kelurahan KODE dari Disdukcapil."
        ),
        "mydata": "Yang kami simpan: alamat {channel} Anda ({address}), bahasa, dan langganan: {subs}.",
        "erased": "Data Anda sudah dihapus. Anda tidak akan menerima pesan lagi.",
        "none": "tidak ada",
        "unknown": "Maaf, saya tidak mengerti.",
    },
    "en": {
        "help": (
            "Disdukcapil information service. Commands:\n"
            "{p}langganan (subscribe) - follow an office's news\n"
            "{p}berhenti (stop) - unsubscribe\n"
            "{p}jam (hours) - service hours and quota\n"
            "{p}layanan (services) - service numbers and apps\n"
            "{p}lacak CODE PIN (track) - your application's status\n"
            "{p}dataku - what we hold on you; {p}hapus - erase it\n"
            "{p}bantuan (help) - this message"
        ),
        "welcome": "Welcome to the Disdukcapil information service.",
        "choose_office": "Choose an office:",
        "choose_topic": "Choose a topic from {office}:",
        "subscribed": "You are subscribed to: {topic}. Send {p}berhenti to stop.",
        "unsubscribed": "You unsubscribed from {what}.",
        "unsub_all": "all topics",
        "not_subscribed": "You have no subscriptions.",
        "choose_unsub": "Choose a topic to leave, or send {p}berhenti semua:",
        "unknown_topic": 'Unknown topic "{arg}". Send {p}langganan to see the list.',
        "unknown_office": 'Unknown office "{arg}".',
        "which_office": "Which office? Send {p}{cmd} OFFICE, e.g. {p}{cmd} {example}. Offices: {offices}",
        "no_hours": "No service hours published yet for {office}.",
        "hours": "Service hours of {office}:",
        "quota": "Quota: {n} people a day.",
        "no_services": "No service numbers published yet for {office}.",
        "services": "Services of {office}:",
        "online_app": "Online app: {app}",
        "track_usage": "Send {p}lacak CODE PIN as printed on your application receipt.",
        "track_private": "For your safety, send {p}lacak only in a private chat with me.",
        "track_moved": "I will answer you in a private message.",
        "track_wrong": "Code or PIN does not match.",
        "track_limited": "Too many attempts. Try again later.",
        "track_status": "Application {document} {reference}: {status}. Further news will come here.",
        "linked": "Application {document} {reference} linked. Status: {status}. Further news will come here.",
        "bad_code": "Unknown or already used code.",
        "relay_ok": "This group is registered to relay news from {office}. Thank you.",
        "relay_added": "Thanks for adding me. Kelurahan admin: send {p}kelurahan CODE from Disdukcapil.",
        "mydata": "We hold: your {channel} address ({address}), your language, and subscriptions: {subs}.",
        "erased": "Your data is erased. You will receive no more messages.",
        "none": "none",
        "unknown": "Sorry, I did not understand.",
    },
}
STATUS_WORDS = {
    "id": {
        "received": "diterima",
        "verified": "diverifikasi",
        "needs_document": "berkas belum lengkap",
        "ready": "siap diambil",
        "rejected": "ditolak",
        "done": "selesai",
    },
    "en": {
        "received": "received",
        "verified": "verified",
        "needs_document": "documents missing",
        "ready": "ready for pickup",
        "rejected": "rejected",
        "done": "done",
    },
}


class Conversation:
    """One inbound record being answered."""

    def __init__(self, hub: Hub, record: Inbound) -> None:
        self.hub, self.record = hub, record
        self.locale = record.locale if record.locale in TEXT else "id"
        self.channel = hub.channel(record.channel)
        self.prefix = self.channel.capabilities.command_prefix

    def t(self, key: str, **values: Any) -> str:
        return TEXT[self.locale][key].format(p=self.prefix, **values)

    @property
    def private(self) -> bool:
        return self.record.chat_kind == "person"

    async def person(self) -> Endpoint:
        """The citizen's own endpoint (a person's address, not the group they wrote in)."""
        async with self.hub.db.transaction() as session:
            return await endpoint_for(
                session, self.record.channel, self.record.sender or self.record.address, locale=self.locale
            )

    async def here(self) -> Endpoint:
        """Where to answer: the chat the record came from.

        A group's endpoint comes back to life only when someone adds the bot again (a kicked bot's group is
        "gone" until then); a person's whenever they write, since writing is asking again.
        """
        if self.private:
            return await self.person()
        rejoined = self.record.kind == "member" and self.record.text == "added"
        async with self.hub.db.transaction() as session:
            return await endpoint_for(
                session,
                self.record.channel,
                self.record.address,
                kind=self.record.chat_kind,
                locale=self.locale,
                reactivate=rejoined,
            )

    async def reply(
        self, text: str, buttons: list[dict[str, str]] | None = None, *, to: Endpoint | None = None
    ) -> int:
        endpoint = to or await self.here()
        if buttons and not self.channel.capabilities.buttons:
            buttons = [b for b in buttons if b.get("url")]
        draft = delivery.Draft(
            kind="reply",
            lane="urgent",
            group="system",
            template="reply",
            context={"text": text, "buttons": buttons or [], "office": {}, "tz": "Asia/Jakarta"},
            endpoint_ids=[endpoint.id],
            renditions=[(self.record.channel, self.locale)],
        )
        message = await delivery.create_message(self.hub, draft)
        await self.hub.queue.plan_soon(message.id, "urgent")
        return message.id


#: One lock per chat: a chat's messages are answered one at a time, so its replies are created (and,
#: by hub.delivery.order, sent) in the order the messages came. Weak values: idle chats cost nothing.
_CHATS: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


async def answer(hub: Hub, record: Inbound) -> None:
    """Answer one inbound record; records from the same chat are answered in the order they came."""
    if record.channel not in hub.channels:
        return
    key = (record.channel, record.address)
    lock = _CHATS.get(key)
    if lock is None:
        lock = _CHATS[key] = asyncio.Lock()
    async with lock:
        await _answer(hub, record)


async def _answer(hub: Hub, record: Inbound) -> None:
    convo = Conversation(hub, record)
    if record.kind == "member":
        if record.text == "added":
            await convo.reply(convo.t("relay_added"))
        elif record.text == "removed":
            await _deactivate(hub, record.channel, record.address, "bot removed from the group")
        return
    if record.kind == "button":
        await _button(convo, record.data)
        return
    if record.kind == "command":
        found = command_of(record.command)
        if found is not None:
            name, language = found
            if language is not None:
                convo.locale = language
            await HANDLERS[name](convo, list(record.args))
            return
    if record.kind == "text" and not convo.private:
        return  # a group's own conversation is none of the bot's business
    await convo.reply(convo.t("unknown") + "\n" + convo.t("help"))


# ---------------------------------------------------------------------------------------------------------
# Commands


async def cmd_help(convo: Conversation, args: list[str]) -> None:
    await convo.reply(convo.t("help"))


async def cmd_start(convo: Conversation, args: list[str]) -> None:
    payload = args[0] if args else ""
    if payload.startswith("c"):
        try:
            case = await applicants.link_case(
                convo.hub,
                payload,
                convo.record.channel,
                convo.record.sender or convo.record.address,
                locale=convo.locale,
            )
        except applicants.ApplicantError:
            await convo.reply(convo.t("bad_code"))
            return
        await convo.reply(
            convo.t(
                "linked",
                document=case.document,
                reference=case.reference,
                status=STATUS_WORDS[convo.locale].get(case.status, case.status),
            )
        )
        return
    if payload.startswith("t"):
        await cmd_subscribe(convo, [payload[1:]])
        return
    await convo.reply(convo.t("welcome") + "\n\n" + convo.t("help"))


async def cmd_subscribe(convo: Conversation, args: list[str]) -> None:
    hub = convo.hub
    async with hub.db.session() as session:
        if args:
            topic = await _find_topic(session, args[0])
            if topic is None:
                await convo.reply(convo.t("unknown_topic", arg=args[0]))
                return
        else:
            offices = (await session.execute(select(Office).order_by(Office.name))).scalars().all()
            lines = [f"{o.name}: {convo.prefix}langganan {o.id}" for o in offices]
            buttons = [{"text": o.name, "data": f"o:{o.id}"} for o in offices]
            await convo.reply(convo.t("choose_office") + "\n" + "\n".join(lines), buttons)
            return
    await _subscribe(convo, topic)


async def _subscribe(convo: Conversation, topic: Topic) -> None:
    target = await convo.here()
    async with convo.hub.db.transaction() as session:
        # Asking from one's own chat is the opt-in: nothing to confirm by another route.
        await set_state(session, topic.id, target.id, "confirmed")
    await convo.reply(convo.t("subscribed", topic=topic.name), to=target)


async def cmd_unsubscribe(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    async with convo.hub.db.transaction() as session:
        if args and args[0].lower() in ("semua", "all"):
            topic_ids = None
            what = convo.t("unsub_all")
        elif args:
            topic = await _find_topic(session, args[0])
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


async def cmd_hours(convo: Conversation, args: list[str]) -> None:
    office = await _office_for(convo, args, "jam")
    if office is None:
        return
    hours, quota = await _latest_hours(convo.hub, office)
    if not hours:
        await convo.reply(convo.t("no_hours", office=office.name))
        return
    lines = [convo.t("hours", office=office.name)]
    lines += [
        f"- {day_name(k, convo.locale)}: {format_hours(v, convo.locale, office.timezone)}"
        for k, v in hours.items()
    ]
    if quota:
        lines.append(convo.t("quota", n=quota))
    await convo.reply("\n".join(lines))


async def cmd_services(convo: Conversation, args: list[str]) -> None:
    office = await _office_for(convo, args, "layanan")
    if office is None:
        return
    contacts, app, via = await _latest_contacts(convo.hub, office)
    if not contacts and not app:
        await convo.reply(convo.t("no_services", office=office.name))
        return
    lines = [convo.t("services", office=office.name)]
    lines += [f"- {service}: {number}" + (f" ({via})" if via else "") for service, number in contacts.items()]
    if app:
        lines.append(convo.t("online_app", app=app))
    await convo.reply("\n".join(lines))


async def cmd_track(convo: Conversation, args: list[str]) -> None:
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
    await applicants.link_case(hub, case.link_code, convo.record.channel, to.address, locale=convo.locale)
    await convo.reply(
        convo.t(
            "track_status",
            document=case.document,
            reference=case.reference,
            status=STATUS_WORDS[convo.locale].get(case.status, case.status),
        ),
        to=to,
    )


async def cmd_relay(convo: Conversation, args: list[str]) -> None:
    """Register a kelurahan group with a one-time code from ``hub relays code``."""
    if convo.private or not args:
        await convo.reply(convo.t("bad_code"))
        return
    hub = convo.hub
    async with hub.db.transaction() as session:
        row = await session.get(KeyValue, f"relay:{args[0]}")
        if row is None:
            await convo.reply(convo.t("bad_code"))
            return
        office = await session.get(Office, row.value)
        await session.execute(delete(KeyValue).where(KeyValue.key == f"relay:{args[0]}"))
        endpoint = await endpoint_for(
            session,
            convo.record.channel,
            convo.record.address,
            kind=convo.record.chat_kind,
            locale=convo.locale,
        )
        endpoint.kind, endpoint.relay_office_id = convo.record.chat_kind, office.id if office else None
        general = await session.scalar(
            select(Topic).where(Topic.office_id == row.value, Topic.service.is_(None))
        )
        if general is not None:
            await set_state(session, general.id, endpoint.id, "confirmed")
        name = office.name if office else row.value
    await convo.reply(convo.t("relay_ok", office=name))


async def cmd_mydata(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    view = await subscriber_view(convo.hub, target.id)
    subs = ", ".join(slug for slug, state in view["subscriptions"].items() if state == "confirmed")
    await convo.reply(
        convo.t(
            "mydata",
            channel=view["channel"],
            address=convo.channel.mask_address(view["address"]),
            subs=subs or convo.t("none"),
        ),
        to=target,
    )


async def cmd_erase(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    await convo.reply(convo.t("erased"), to=target)
    async with convo.hub.db.transaction() as session:
        await unsubscribe_endpoint(session, target.id, None)
    # The reply above is already planned; the endpoint itself goes once it has been sent.
    await _deactivate(
        convo.hub, convo.record.channel, target.address, "erased at the citizen's request", forget=True
    )


async def _button(convo: Conversation, data: str) -> None:
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
                await _subscribe(convo, topic)
                return
        if kind == "u":
            topic = await session.get(Topic, int(value)) if value.isdigit() else None
            await cmd_unsubscribe(convo, [topic.slug if topic else "semua"])
            return
    await convo.reply(convo.t("unknown") + "\n" + convo.t("help"))


HANDLERS: dict[str, Callable[[Conversation, list[str]], Awaitable[None]]] = {
    "start": cmd_start,
    "langganan": cmd_subscribe,
    "berhenti": cmd_unsubscribe,
    "jam": cmd_hours,
    "layanan": cmd_services,
    "lacak": cmd_track,
    "bantuan": cmd_help,
    "kelurahan": cmd_relay,
    "dataku": cmd_mydata,
    "hapus": cmd_erase,
}


# ---------------------------------------------------------------------------------------------------------
# Lookups


async def _find_topic(session: Any, text: str) -> Topic | None:
    text = text.strip().lower()
    topic = await session.scalar(select(Topic).where(Topic.slug == text))
    if topic is None and text.isdigit():
        topic = await session.get(Topic, int(text))
    return topic


async def _office_for(convo: Conversation, args: list[str], cmd: str) -> Office | None:
    async with convo.hub.db.session() as session:
        offices = (await session.execute(select(Office).order_by(Office.id))).scalars().all()
        if args:
            wanted = " ".join(args).lower()
            match = [o for o in offices if wanted in (o.id, o.name.lower())] or [
                o for o in offices if wanted in o.id or wanted in o.name.lower()
            ]
            if len(match) == 1:
                return match[0]
            await convo.reply(convo.t("unknown_office", arg=" ".join(args)))
            return None
        sender = await session.scalar(
            select(Endpoint.id).where(
                Endpoint.channel == convo.record.channel,
                Endpoint.address == (convo.record.sender if convo.private else convo.record.address),
            )
        )
        if sender is not None:
            # Distinct ids, not rows: PostgreSQL cannot compare the JSON profile column for DISTINCT.
            subscribed = (
                (
                    await session.execute(
                        select(Topic.office_id)
                        .join(Subscription, Subscription.topic_id == Topic.id)
                        .where(Subscription.endpoint_id == sender, Subscription.state == "confirmed")
                        .distinct()
                    )
                )
                .scalars()
                .all()
            )
            if len(subscribed) == 1:
                return await session.get(Office, subscribed[0])
        if len(offices) == 1:
            return offices[0]
    await convo.reply(
        convo.t(
            "which_office",
            cmd=cmd,
            example=offices[0].id if offices else "kota-serang",
            offices=", ".join(o.id for o in offices),
        )
    )
    return None


async def _latest(hub: Hub, office: Office, template: str) -> dict[str, Any] | None:
    """The newest published announcement of a kind still valid, else the office's own recorded change."""
    now = utcnow()
    async with hub.db.session() as session:
        ann = await session.scalar(
            select(Announcement)
            .where(
                Announcement.office_id == office.id,
                Announcement.template == template,
                Announcement.state.in_(("published", "scheduled")),
                (Announcement.valid_until.is_(None)) | (Announcement.valid_until > now),
            )
            .order_by(Announcement.id.desc())
            .limit(1)
        )
    if ann is not None:
        return ann.data
    changes = (office.profile or {}).get("changes", [])
    wanted = {"hours_changed": ("hours_changed",), "online_only": ("online_only", "hours_changed")}[template]
    for change in reversed(changes):
        if change.get("kind") in wanted:
            return change
    return None


async def _latest_hours(hub: Hub, office: Office) -> tuple[dict[str, str], int | None]:
    data = await _latest(hub, office, "hours_changed") or {}
    return dict(data.get("hours") or {}), data.get("daily_quota")


async def _latest_contacts(hub: Hub, office: Office) -> tuple[dict[str, str], str | None, str | None]:
    data = await _latest(hub, office, "online_only") or {}
    profile = office.profile or {}
    contacts = dict(profile.get("contacts") or {})
    contacts.update(data.get("contacts") or {})
    return (
        contacts,
        data.get("online_app") or profile.get("online_app"),
        data.get("via") or ("WhatsApp" if contacts else None),
    )


async def _deactivate(hub: Hub, channel: str, address: str, reason: str, *, forget: bool = False) -> None:
    async with hub.db.transaction() as session:
        endpoint = await session.scalar(
            select(Endpoint).where(Endpoint.channel == channel, Endpoint.address == address)
        )
        if endpoint is not None:
            endpoint.active, endpoint.deactivated_reason = False, reason
            if forget:
                await session.execute(delete(Subscription).where(Subscription.endpoint_id == endpoint.id))


async def relay_code(hub: Hub, office_id: str) -> str:
    """A one-time code a kelurahan admin sends in their group to register it as a relay."""
    code = "K" + secrets.token_hex(4).upper()
    async with hub.db.transaction() as session:
        if await session.get(Office, office_id) is None:
            raise NotFound(f"unknown office {office_id!r}")
        session.add(KeyValue(key=f"relay:{code}", value=office_id))
    return code
