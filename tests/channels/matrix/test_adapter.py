"""The Matrix adapter against a real Synapse (and a few pure unit tests of its parsing and mapping)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from nio import AsyncClient, AsyncClientConfig, ErrorResponse, MegolmEvent, RoomMessageNotice, RoomSendError
from nio.crypto import ENCRYPTION_ENABLED

from channels.base import (
    Button,
    Content,
    Inbound,
    InvalidAddress,
    Lane,
    NoPacing,
    Outbound,
    Outcome,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
)
from channels.matrix import MatrixChannel, outcome_for_error, parse_command, render
from tests.services.synapse import MatrixUser, Person, SynapseServer

NewUser = Callable[[str], Awaitable[Person]]
ChannelFactory = Callable[..., Awaitable[MatrixChannel]]


class RecordingPacer:
    """Records what the adapter asked of the hub's pacer; never waits."""

    def __init__(self) -> None:
        self.waits: list[tuple[list[Rate], Lane]] = []
        self.pauses: list[tuple[str, float]] = []

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        self.waits.append((list(rates), lane))

    async def acquire(self, rates: Sequence[Rate], lane: Lane = "bulk", **_: object) -> None:
        await self.wait(rates, lane)

    async def release(self, permit: object) -> None:
        return None

    async def pause(self, key: str, seconds: float) -> None:
        self.pauses.append((key, seconds))

    async def paused_for(self, key: str) -> float:
        return 0.0


async def add_bot(owner: Person, bot_person: Person, room_id: str) -> None:
    """Put the bot in a room the way staff would: invite it, and it accepts."""
    await owner.invite(room_id, bot_person.user_id)
    await bot_person.join(room_id)


def item(delivery_id: int, address: str, text: str = "Halo", **kwargs: Any) -> Outbound:
    return Outbound(delivery_id=delivery_id, address=address, content=Content(text=text, **kwargs))


async def send_all(channel: MatrixChannel, items: list[Outbound], pacer: Any = None) -> dict[int, Outcome]:
    return {d: o async for d, o in channel.send(items, pacer or NoPacing())}


async def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------------------
# Unit tests: no homeserver needed


def test_normalize_address_accepts_the_three_forms() -> None:
    channel = MatrixChannel(homeserver="http://x", user_id="@b:x", device_id="D", access_token="t")
    assert channel.normalize_address(" @Budi:Matrix.Example.ID ") == "@budi:matrix.example.id"
    assert channel.normalize_address("#kel-menteng:kab.go.id") == "#kel-menteng:kab.go.id"
    assert channel.normalize_address("!AbC123:server.id:8448") == "!AbC123:server.id:8448"
    assert channel.normalize_address("!b64_Room-Id") == "!b64_Room-Id"  # room version 12: no server part
    assert channel.normalize_address("https://matrix.to/#/@siti:example.org") == "@siti:example.org"
    for bad in ("", "budi", "@budi", "@bu di:x.org", "#room", "!:x.org", "@a:", "+628123"):
        with pytest.raises(InvalidAddress):
            channel.normalize_address(bad)


def test_render_turns_newlines_into_br_and_buttons_into_links() -> None:
    body, html = render(
        Content(
            text="Jam buka\n08.00",
            html="<b>Jam buka</b>\n08.00",
            buttons=(Button("Peta", url="https://x.id/?a=1&b=2"),),
        )
    )
    assert body == "Jam buka\n08.00\n\nPeta: https://x.id/?a=1&b=2"
    assert html == '<b>Jam buka</b><br>08.00<br><br><a href="https://x.id/?a=1&amp;b=2">Peta</a>'
    assert render(Content(text="a < b\nc")) == ("a < b\nc", "a &lt; b<br>c")


def test_parse_command_maps_english_synonyms() -> None:
    assert parse_command("!JAM besok") == ("jam", ("besok",), "id")
    assert parse_command("!hours") == ("jam", (), "en")
    assert parse_command("!track 3201-XYZ") == ("lacak", ("3201-XYZ",), "en")
    assert parse_command("halo") is None
    assert parse_command("! ") is None


def test_outcome_mapping_of_homeserver_errors() -> None:
    limited = RoomSendError("Too Many Requests", "M_LIMIT_EXCEEDED", retry_after_ms=2500)
    assert outcome_for_error(limited) == RetryLater(
        "send: M_LIMIT_EXCEEDED Too Many Requests", 2.5, provider=True
    )
    assert isinstance(outcome_for_error(RoomSendError("not in room", "M_FORBIDDEN")), RecipientGone)
    assert isinstance(outcome_for_error(RoomSendError("no room", "M_NOT_FOUND")), RecipientGone)
    assert isinstance(outcome_for_error(RoomSendError("too big", "M_TOO_LARGE")), Rejected)
    assert outcome_for_error(ErrorResponse("unknown error")).delay is None  # 5xx, non-JSON body

    class Transport:  # spec 1.10+: the delay may come only as a Retry-After header
        status = 429
        headers: ClassVar[dict[str, str]] = {"Retry-After": "7"}

    header_only = RoomSendError("slow down", "M_LIMIT_EXCEEDED")
    header_only.transport_response = Transport()  # type: ignore[assignment]
    assert outcome_for_error(header_only) == RetryLater(
        "send: M_LIMIT_EXCEEDED slow down", 7.0, provider=True
    )


# --------------------------------------------------------------------------------------------------------
# Against Synapse


async def test_send_to_public_room_by_alias_is_read_back(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person, bot: MatrixUser
) -> None:
    alice: Person = await new_user("alice")
    alias = f"kel-{uuid.uuid4().hex[:6]}"
    room_id = await alice.create_room(public=True, alias=alias)
    await add_bot(alice, bot_person, room_id)
    channel = await make_channel()
    pacer = RecordingPacer()

    content = Content(
        text="Pelayanan KTP-el\nbuka 08.00",
        html="<b>Pelayanan KTP-el</b>\nbuka 08.00",
        buttons=(Button("Jadwal", url="https://disdukcapil.example.id/jadwal"),),
    )
    out = Outbound(delivery_id=1, address=f"#{alias}:localhost", content=content, lane="urgent")
    outcomes = await send_all(channel, [out], pacer)

    assert isinstance(outcomes[1], Sent) and outcomes[1].provider_id
    [event] = await alice.messages(room_id)
    assert event["event_id"] == outcomes[1].provider_id
    assert event["sender"] == bot.user_id
    assert event["content"] == {
        "msgtype": "m.notice",
        "body": "Pelayanan KTP-el\nbuka 08.00\n\nJadwal: https://disdukcapil.example.id/jadwal",
        "format": "org.matrix.custom.html",
        "formatted_body": "<b>Pelayanan KTP-el</b><br>buka 08.00<br><br>"
        '<a href="https://disdukcapil.example.id/jadwal">Jadwal</a>',
    }
    [(rates, lane)] = pacer.waits
    assert lane == "urgent" and rates[0].key.startswith("mx:127.0.0.1:") and rates[0].count == 5


async def test_direct_room_created_once_and_reused_after_restart(
    make_channel: ChannelFactory, new_user: NewUser
) -> None:
    citizen: Person = await new_user("warga")
    channel = await make_channel()
    first = await send_all(channel, [item(10, citizen.user_id, "Berkas Anda diterima")])
    assert isinstance(first[10], Sent), first
    invites = await citizen.invites()
    assert len(invites) == 1
    [room_id] = invites
    is_direct = [
        e["content"].get("is_direct")
        for e in invites[room_id]["invite_state"]["events"]
        if e["type"] == "m.room.member" and e["state_key"] == citizen.user_id
    ]
    assert is_direct == [True]

    await channel.close()  # a restarted worker must find the same room through m.direct
    restarted = await make_channel()
    second = await send_all(restarted, [item(11, citizen.user_id, "KTP-el Anda sudah jadi")])
    assert isinstance(second[11], Sent), second
    assert list(await citizen.invites()) == [room_id]

    await citizen.join(room_id)
    bodies = [e["content"]["body"] for e in await citizen.messages(room_id)]
    assert bodies == ["Berkas Anda diterima", "KTP-el Anda sudah jadi"]


async def test_unknown_user_is_rejected(make_channel: ChannelFactory) -> None:
    channel = await make_channel()
    outcomes = await send_all(channel, [item(12, "@tidak-ada:localhost")])
    assert isinstance(outcomes[12], Rejected), outcomes


async def test_same_delivery_sent_twice_posts_one_event(
    make_channel: ChannelFactory,
    new_user: NewUser,
    bot_person: Person,
    bot: MatrixUser,
    synapse: SynapseServer,
) -> None:
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    # Log in with a password on a fixed device, twice: a re-run after a crash gets a new token, same device.
    settings = {"access_token": None, "password": bot.password, "device_id": "HUBWORKER"}
    first = await make_channel(**settings)
    one = await send_all(first, [item(77, room_id, "Pengumuman libur")])
    await first.close()
    rerun = await make_channel(**settings)
    two = await send_all(rerun, [item(77, room_id, "Pengumuman libur")])

    assert isinstance(one[77], Sent) and one[77] == two[77]
    assert [e["content"]["body"] for e in await alice.messages(room_id)] == ["Pengumuman libur"]


async def test_kicked_bot_gets_recipient_gone(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person, bot: MatrixUser
) -> None:
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    channel = await make_channel()
    assert isinstance((await send_all(channel, [item(20, room_id)]))[20], Sent)
    await alice.kick(room_id, bot.user_id)
    outcomes = await send_all(channel, [item(21, room_id)])
    assert isinstance(outcomes[21], RecipientGone), outcomes
    never_joined = await alice.create_room()
    assert isinstance((await send_all(channel, [item(22, never_joined)]))[22], RecipientGone)


async def test_batch_keeps_order_within_a_room(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person, bot: MatrixUser
) -> None:
    alice: Person = await new_user("alice")
    rooms = [await alice.create_room() for _ in range(3)]
    for room_id in rooms:
        await add_bot(alice, bot_person, room_id)
    channel = await make_channel()
    items = [item(100 + 10 * r + n, room, f"pesan {n}") for n in range(4) for r, room in enumerate(rooms)]
    outcomes = await send_all(channel, items)
    assert len(outcomes) == 12 and all(isinstance(o, Sent) for o in outcomes.values())
    for room_id in rooms:
        bodies = [e["content"]["body"] for e in await alice.messages(room_id)]
        assert bodies == [f"pesan {n}" for n in range(4)]


async def test_rate_limited_bot_pauses_and_retries_later(
    make_channel: ChannelFactory,
    new_user: NewUser,
    bot_person: Person,
    bot: MatrixUser,
    synapse: SynapseServer,
) -> None:
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    synapse.override_ratelimit(bot.user_id, 1, 1)  # not exempt: a low limit of its own
    channel = await make_channel()
    pacer = RecordingPacer()
    outcomes = await send_all(channel, [item(200 + n, room_id, f"n{n}") for n in range(5)], pacer)

    limited = [o for o in outcomes.values() if isinstance(o, RetryLater)]
    assert limited and all(o.delay and o.delay > 0 for o in limited), outcomes
    assert pacer.pauses and all(key == channel.rate.key and s > 0 for key, s in pacer.pauses)


@pytest.mark.skipif(not ENCRYPTION_ENABLED, reason="matrix-nio[e2e] (vodozemac) not installed")
async def test_encrypted_room_message_is_decrypted_by_recipient(
    make_channel: ChannelFactory, new_user: NewUser, bot: MatrixUser, synapse: SynapseServer, tmp_path: Path
) -> None:
    alice_human: Person = await new_user("alice")
    user = alice_human.user
    alice = AsyncClient(
        synapse.base_url,
        user.user_id,
        device_id=user.device_id,
        store_path=str(tmp_path / "alice"),
        config=AsyncClientConfig(encryption_enabled=True),
    )
    (tmp_path / "alice").mkdir()
    alice.restore_login(user.user_id, user.device_id, user.access_token)
    try:
        await alice.keys_upload()
        room_id = await alice_human.create_room(invite=[bot.user_id], encrypted=True)
        await alice.sync(timeout=0)
        channel = await make_channel()
        outcomes = await send_all(channel, [item(300, room_id, "Rahasia: nomor antrean 17")])
        assert isinstance(outcomes[300], Sent), outcomes

        raw = await alice_human.call("GET", f"/rooms/{room_id}/messages?dir=b&limit=10")
        on_the_wire = [e["type"] for e in raw["chunk"] if e["sender"] == bot.user_id and "state_key" not in e]
        assert on_the_wire == ["m.room.encrypted"]

        async def decrypted() -> str | None:
            resp = await alice.sync(timeout=1000)
            join = getattr(resp, "rooms", None) and resp.rooms.join.get(room_id)
            for event in join.timeline.events if join else []:
                if isinstance(event, RoomMessageNotice):
                    return event.body
                assert not isinstance(event, MegolmEvent), "alice could not decrypt the bot's message"
            return None

        assert await wait_for(decrypted) == "Rahasia: nomor antrean 17"
    finally:
        await alice.close()


async def test_listen_commands_membership_and_invites(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person, bot: MatrixUser
) -> None:
    alice: Person = await new_user("alice")
    carol: Person = await new_user("carol")
    old_room = await alice.create_room()
    await add_bot(alice, bot_person, old_room)
    await alice.say(old_room, "!lama")  # before startup: never answered

    channel = await make_channel()
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    task = asyncio.create_task(channel.listen(inbox.put))

    async def next_inbound() -> Inbound:
        return await asyncio.wait_for(inbox.get(), 15)

    try:
        await started(channel)
        group = await alice.create_room(invite=[carol.user_id])
        await carol.join(group)
        await alice.invite(group, bot.user_id)  # from an allowed server: joined by itself
        added = await next_inbound()
        assert (added.kind, added.text, added.address, added.chat_kind) == ("member", "added", group, "group")

        await alice.say(group, "obrolan biasa")  # plain talk in a group is not for the bot
        await alice.say(group, "!Hours sekarang")
        command = await next_inbound()
        assert (command.kind, command.command, command.args) == ("command", "jam", ("sekarang",))
        assert command.locale == "en"
        assert (command.address, command.sender, command.chat_kind) == (group, alice.user_id, "group")

        await alice.say(old_room, "!jam")
        command = await next_inbound()
        assert (command.command, command.locale, command.chat_kind) == ("jam", "id", "person")
        await alice.say(old_room, "halo pak")
        text = await next_inbound()
        assert (text.kind, text.text, text.chat_kind) == ("text", "halo pak", "person")

        # the bot's own messages are not inbound
        await send_all(channel, [item(400, group, "!jam ini dari bot")])
        await alice.kick(group, bot.user_id)
        removed = await next_inbound()
        assert (removed.kind, removed.text, removed.address) == ("member", "removed", group)
        assert inbox.empty()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def started(channel: MatrixChannel) -> None:
    """Wait until the listen loop's first sync (the one that skips history) is done."""

    async def synced() -> bool:
        return bool(channel.client and channel.client.next_batch)

    assert await wait_for(synced)


async def test_listen_resumes_from_stored_sync_token_after_restart(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person
) -> None:
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()

    first = await make_channel()
    task = asyncio.create_task(first.listen(inbox.put))
    await started(first)
    await alice.say(room_id, "!jam")
    assert (await asyncio.wait_for(inbox.get(), 15)).command == "jam"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()

    await alice.say(room_id, "!layanan")  # while no worker listens
    restarted = await make_channel()
    task = asyncio.create_task(restarted.listen(inbox.put))
    try:
        assert (await asyncio.wait_for(inbox.get(), 15)).command == "layanan"
        await asyncio.sleep(0.3)
        assert inbox.empty()  # "!jam" is not answered twice
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_invite_from_other_server_is_rejected(
    make_channel: ChannelFactory, new_user: NewUser, bot: MatrixUser
) -> None:
    alice: Person = await new_user("alice")
    channel = await make_channel(allowed_servers=["kemendagri.go.id"])
    task = asyncio.create_task(channel.listen(lambda inbound: asyncio.sleep(0)))
    try:
        room_id = await alice.create_room(invite=[bot.user_id])

        async def left() -> bool:
            return await alice.membership(room_id, bot.user_id) == "leave"

        assert await wait_for(left)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_second_process_on_the_same_device_is_a_standby(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person
) -> None:
    """One device, one owner: a second adapter on the same store hands items back at once, and takes the
    device over when the owner is gone (a flock: the kernel frees it even when the owner is SIGKILLed)."""
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    owner = await make_channel()
    standby = await make_channel()
    assert await owner.ready() and not await standby.ready()
    assert standby.client is None  # it never touched the crypto store

    started = time.monotonic()
    outcomes = await send_all(standby, [item(500, room_id, "dari cadangan")])
    assert outcomes[500] == RetryLater(
        f"device {standby.device_id} is owned by another process",
        standby.standby_retry_seconds,
        provider=True,
    )
    assert time.monotonic() - started < 1

    await owner.close()
    assert await standby.ready()
    assert isinstance((await send_all(standby, [item(501, room_id, "dari pemilik baru")]))[501], Sent)
    assert [e["content"]["body"] for e in await alice.messages(room_id)] == ["dari pemilik baru"]


async def test_direct_room_missing_from_m_direct_is_found_again(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person
) -> None:
    """A worker that died between creating a citizen's room and recording it in m.direct: the next one
    finds the room by its members instead of opening a second one."""
    citizen: Person = await new_user("warga")
    channel = await make_channel()
    assert isinstance((await send_all(channel, [item(600, citizen.user_id, "pertama")]))[600], Sent)
    [room_id] = await citizen.invites()
    await channel.close()
    await bot_person.call("PUT", f"/user/{bot_person.user_id}/account_data/m.direct", {})

    restarted = await make_channel()
    assert isinstance((await send_all(restarted, [item(601, citizen.user_id, "kedua")]))[601], Sent)
    assert list(await citizen.invites()) == [room_id]
    direct = await bot_person.call("GET", f"/user/{bot_person.user_id}/account_data/m.direct")
    assert direct == {citizen.user_id: [room_id]}


async def test_room_named_or_marked_direct_decides_person_or_group(
    make_channel: ChannelFactory, new_user: NewUser, bot: MatrixUser
) -> None:
    """A citizen's "start chat" (is_direct) is a person; a kelurahan room with only its admin and the bot
    is still a group, because it has a name; answers to a person go to the room they wrote in."""
    budi: Person = await new_user("budi")
    channel = await make_channel()
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    task = asyncio.create_task(channel.listen(inbox.put))
    try:
        await started(channel)
        direct = await budi.create_room(invite=[bot.user_id], is_direct=True)
        named = await budi.create_room(invite=[bot.user_id], name="Kelurahan Landungsari")

        async def joined_both() -> bool:
            return all([await budi.membership(r, bot.user_id) == "join" for r in (direct, named)])

        assert await wait_for(joined_both)
        added = await asyncio.wait_for(inbox.get(), 15)  # only the group is greeted
        assert (added.kind, added.address, added.chat_kind) == ("member", named, "group")
        await budi.say(named, "!jam")
        await budi.say(direct, "!jam")
        in_named, in_direct = await asyncio.wait_for(inbox.get(), 15), await asyncio.wait_for(inbox.get(), 15)
        assert (in_named.address, in_named.chat_kind) == (named, "group")
        assert (in_direct.address, in_direct.chat_kind) == (direct, "person")
        outcomes = await send_all(channel, [item(700, budi.user_id, "jawaban")])
        assert isinstance(outcomes[700], Sent)
        assert [e["content"]["body"] for e in await budi.messages(direct)][-1] == "jawaban"
        assert list(await budi.invites()) == []  # no second room was opened
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_standby_listener_takes_over_when_the_owner_stops(
    make_channel: ChannelFactory, new_user: NewUser, bot_person: Person
) -> None:
    alice: Person = await new_user("alice")
    room_id = await alice.create_room()
    await add_bot(alice, bot_person, room_id)
    owner = await make_channel()
    standby = await make_channel(standby_retry_seconds=0.2)
    inbox: asyncio.Queue[Inbound] = asyncio.Queue()
    task = asyncio.create_task(standby.listen(inbox.put))
    try:
        await asyncio.sleep(0.5)
        assert not task.done() and standby.client is None  # waiting for the device, not failing
        await owner.close()
        await started(standby)
        await alice.say(room_id, "!jam")
        assert (await asyncio.wait_for(inbox.get(), 15)).command == "jam"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
