"""A broadcast to 3 rooms (one encrypted), 20 direct-message subscribers and a room the bot was kicked from,
sent by a real `hub worker` process that is killed with SIGKILL in the middle and started again.

The worker talks to Synapse through a proxy that delays every response by 0.1 s, and the hub paces the bot
at 20 messages a second; each first contact also makes Synapse create a direct room (about half a second
of its time on a test machine, which is what bounds the pace: 20 citizens, not more, keep the test short),
so the broadcast takes several seconds and requests are always on their way. The
test freezes the worker (SIGSTOP) until Synapse holds a message the worker has not recorded yet, then kills
it (SIGKILL): those deliveries stay "sending" in the database. The restarted worker claims them again once
their lease runs out and sends them with the same transaction ids, which Synapse answers with the events it
already has. Every recipient reads back exactly one message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub import announcements, delivery, subscriptions
from hub.context import Hub
from hub.store.models import Delivery, Endpoint
from tests.conftest import start_hub
from tests.integration.matrix.conftest import (
    E2EReader,
    SlowProxy,
    add_bot,
    bot_bodies,
    matrix_conf,
    matrix_settings,
    wait_done,
    wait_until,
)
from tests.services.synapse import MatrixUser, NewUser, Person, SynapseServer
from tests.workers import kill, output_of, worker_processes, write_settings

CITIZENS = 20
TITLE = "Pelayanan tatap muka dibatasi"
TEXT = "Mulai Senin, loket Dindukcapil buka pukul 08.00–11.00 WIB; layanan lain melalui WhatsApp."


async def test_broadcast_reaches_each_once_through_a_killed_worker(
    pg_database: tuple[str, str | None],
    redis_url: str,
    synapse: SynapseServer,
    bot: MatrixUser,
    bot_person: Person,
    new_user: NewUser,
    slow_synapse: SlowProxy,
    tmp_path: Path,
) -> None:
    # Rooms as offices have them: two kelurahan rooms, the staff's encrypted room, and one that removed
    # the bot. A reader with an encrypting device of her own sits in the encrypted room.
    # Registering 50 people takes Synapse a few seconds: it runs while the rooms and the hub are set up.
    prefix = f"warga-{uuid.uuid4().hex[:6]}"
    registering = asyncio.create_task(asyncio.to_thread(synapse.register_many, prefix, CITIZENS))
    citizen_ids = [f"@{prefix}-{n}:{synapse.server_name}" for n in range(CITIZENS)]
    humas = await new_user("humas")
    secretary = synapse.register(f"sekretaris-{uuid.uuid4().hex[:6]}")
    reader = E2EReader(synapse, secretary, tmp_path / "reader-store")
    citizens: list[Person] = []
    hub: Hub | None = None
    try:
        await reader.start()
        rooms = [await humas.create_room(name=f"Kelurahan {n}") for n in ("Kraton Kidul", "Panjang Wetan")]
        secret_room = await humas.create_room(
            name="Humas (terenkripsi)", encrypted=True, invite=[secretary.user_id]
        )
        await reader.client.join(secret_room)
        kicked_room = await humas.create_room(name="Kelurahan Podosugih")
        for room_id in [*rooms, secret_room, kicked_room]:
            await add_bot(humas, bot_person, room_id)
        await humas.kick(kicked_room, bot.user_id)

        conf = matrix_conf(slow_synapse.url, bot, tmp_path / "store", rate_per_second=20, concurrency=16)
        settings = matrix_settings(pg_database, redis_url, conf, lease_seconds=2)
        hub = await start_hub(settings)
        for room_id in [*rooms, secret_room, kicked_room]:
            await subscriptions.subscribe(
                hub, "kota-pekalongan", "matrix", room_id, confirmed=True, kind="group"
            )
        for user_id in citizen_ids:
            await subscriptions.subscribe(hub, "kota-pekalongan", "matrix", user_id, confirmed=True)
        citizens += [Person(synapse, user) for user in await registering]
        assert [c.user_id for c in citizens] == citizen_ids
        settings_file = write_settings(settings, tmp_path / "worker.toml")
        req = announcements.AnnouncementInput(
            template="free_text", topics=["kota-pekalongan"], data={"title": TITLE, "text": TEXT}
        )
        group_rooms = {*rooms, secret_room, kicked_room}

        # 1. A worker starts the broadcast; once 10 messages are recorded it is frozen until Synapse holds
        #    a message it never heard back about, and killed with SIGKILL.
        with worker_processes(settings_file) as [first]:
            _, message = await announcements.create(hub, req, publish=True)
            assert message is not None

            async def ten_sent() -> bool:
                assert_alive(first)
                return (await status_of(hub, message.id))["totals"]["sent"] >= 10

            await wait_until(ten_sent, 60, "10 messages sent by the first worker")
            unrecorded = await kill_with_unrecorded_sends(first, hub, message.id, bot_person, group_rooms)

        at_kill = (await status_of(hub, message.id))["totals"]
        assert at_kill["sent"] < CITIZENS, f"the kill came too late: {at_kill}"

        # 2. A new worker (same device, same crypto store) finishes the broadcast.
        with worker_processes(settings_file) as [second]:
            status = await wait_done(hub, message.id, 60, check=lambda: assert_alive(second))
        totals = status["totals"]
        assert (totals["sent"], totals["gone"], status["total"]) == (3 + CITIZENS, 1, 4 + CITIZENS), (
            totals,
            await problems(hub, message.id),
        )

        # Transaction ids: the deliveries sent again got back the very events the dead worker had posted.
        provider = await provider_ids(hub, message.id)
        assert {d: provider[d] for d in unrecorded} == unrecorded

        # 3. Everyone reads exactly one message: room members, the encrypted room's reader (decrypting),
        #    and every citizen in their one direct room with the bot.
        delivery_of = {address: d for d, address in (await deliveries(hub, message.id)).items()}
        for room_id in rooms:
            [(event_id, body)] = await bot_bodies(humas, room_id, bot.user_id)
            assert TITLE in body and TEXT in body
            assert provider[delivery_of[room_id]] == event_id
        raw = await humas.call("GET", f"/rooms/{secret_room}/messages?dir=b&limit=50")
        wire = [e["type"] for e in raw["chunk"] if e["sender"] == bot.user_id and "state_key" not in e]
        assert wire == ["m.room.encrypted"]
        [decrypted] = await reader.notices(secret_room, bot.user_id, want=1)
        assert TITLE in decrypted and TEXT in decrypted

        async def direct_messages(citizen: Person) -> list[tuple[str, str]]:
            [room_id] = await citizen.rooms_with(bot.user_id)  # one direct room, never a second one
            return await bot_bodies(citizen, room_id, bot.user_id)

        received = await asyncio.gather(*(direct_messages(c) for c in citizens))
        for citizen, messages in zip(citizens, received, strict=True):
            [(event_id, body)] = messages
            assert TITLE in body
            assert provider[delivery_of[citizen.user_id]] == event_id

        # 4. The room that kicked the bot ends "gone", and its endpoint is switched off.
        assert status["channels"]["matrix"]["gone"] == 1
        async with hub.db.session() as session:
            kicked = await session.scalar(select(Endpoint).where(Endpoint.address == kicked_room))
            gone = await session.scalar(select(Delivery.state).where(Delivery.endpoint_id == kicked.id))
        assert gone == "gone" and not kicked.active
        assert "not a member" in (kicked.deactivated_reason or "")
    finally:
        await asyncio.gather(registering, return_exceptions=True)
        if hub is not None:
            await hub.close()
        await reader.close()
        for citizen in citizens:
            await citizen.http.aclose()


# ---------------------------------------------------------------------------------------------------------


def assert_alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"worker exited with {proc.returncode}:\n{output_of(proc)}")


async def kill_with_unrecorded_sends(
    proc: subprocess.Popen[bytes], hub: Hub, message_id: int, bot_account: Person, group_rooms: set[str]
) -> dict[int, str]:
    """Freeze the worker until Synapse holds messages of deliveries still "sending", then SIGKILL it.

    Returns those deliveries with the event ids Synapse gave them.
    """
    for _ in range(40):
        os.killpg(proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.3)  # Synapse finishes the requests that had reached it
        posted = await posted_by_address(bot_account, group_rooms)
        sending = await deliveries(hub, message_id, state="sending")
        unrecorded = {d: posted[a][0] for d, a in sending.items() if posted.get(a)}
        if unrecorded:
            kill(proc)
            return unrecorded
        os.killpg(proc.pid, signal.SIGCONT)
        assert_alive(proc)
        await asyncio.sleep(0.15)
    raise AssertionError("Synapse never held a message the worker had not recorded")


async def posted_by_address(bot_account: Person, group_rooms: set[str]) -> dict[str, list[str]]:
    """What the bot has posted so far, by hub address: a group's room id, or the citizen of a direct room.

    Read through the bot's own account (another device of it), in one sync: encrypted events count too.
    """
    sync_filter = json.dumps(
        {
            "room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": False}},
            "presence": {"not_types": ["*"]},
        },
        separators=(",", ":"),
    )
    data: dict[str, Any] = await bot_account.call("GET", f"/sync?timeout=0&filter={sync_filter}")
    found: dict[str, list[str]] = {}
    for room_id, info in data.get("rooms", {}).get("join", {}).items():
        events = info["state"]["events"] + info["timeline"]["events"]
        posted = [
            e["event_id"]
            for e in info["timeline"]["events"]
            if e["sender"] == bot_account.user_id and e["type"] in ("m.room.message", "m.room.encrypted")
        ]
        if room_id in group_rooms:
            address = room_id
        else:
            others = {
                e["state_key"]
                for e in events
                if e["type"] == "m.room.member"
                and e["state_key"] != bot_account.user_id
                and e["content"].get("membership") in ("join", "invite")
            }
            if len(others) != 1:
                continue
            address = others.pop()
        found.setdefault(address, []).extend(posted)
    return found


async def status_of(hub: Hub, message_id: int) -> dict[str, Any]:
    status = await delivery.status(hub, message_id)
    assert status is not None
    return status


async def deliveries(hub: Hub, message_id: int, state: str | None = None) -> dict[int, str]:
    """Delivery id -> endpoint address of a message (optionally only those in ``state``)."""
    query = (
        select(Delivery.id, Endpoint.address)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .where(Delivery.message_id == message_id)
    )
    if state is not None:
        query = query.where(Delivery.state == state)
    async with hub.db.session() as session:
        return {r[0]: r[1] for r in await session.execute(query)}


async def provider_ids(hub: Hub, message_id: int) -> dict[int, str | None]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Delivery.id, Delivery.provider_id).where(Delivery.message_id == message_id)
        )
        return {r[0]: r[1] for r in rows}


async def problems(hub: Hub, message_id: int) -> list[tuple[str, str | None]]:
    async with hub.db.session() as session:
        rows = await session.execute(
            select(Delivery.state, Delivery.error).where(
                Delivery.message_id == message_id, Delivery.state != "sent"
            )
        )
        return [(r[0], r[1]) for r in rows]
