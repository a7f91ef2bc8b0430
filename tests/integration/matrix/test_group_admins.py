"""On Matrix, a room's admins are its creator and whoever has the power to change its state (state_default):
only they register the room as a kelurahan relay or change its subscriptions; every member may read.
People write in a real room on Synapse; the adapter reads the room's state, the hub decides.
"""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import select

from hub.bot import relay_code
from hub.context import Hub
from hub.store.models import Endpoint, Subscription, Topic
from tests.integration.matrix.conftest import Listening, bot_bodies, wait_until
from tests.services.synapse import MatrixUser, NewUser, Person

ADMINS_ONLY = "Maaf, hanya admin grup ini yang dapat mengubah langganan atau pendaftaran grup."


async def ask(listening: Listening, person: Person, room_id: str, bot_id: str, text: str) -> list[str]:
    """Say ``text`` in the room; what the bot said there in answer."""
    before = len(await bot_bodies(person, room_id, bot_id))
    event_id = await person.say(room_id, text)
    await listening.handled_event(event_id)
    await listening.settle()
    return [body for _, body in await bot_bodies(person, room_id, bot_id)][before:]


async def room_state(hub: Hub, room_id: str) -> tuple[str | None, str | None]:
    async with hub.db.session() as session:
        room = await session.scalar(select(Endpoint).where(Endpoint.address == room_id))
        if room is None:
            return None, None
        state = await session.scalar(
            select(Subscription.state)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.endpoint_id == room.id, Topic.slug == "kota-pekalongan")
        )
        return state, room.relay_office_id


async def test_only_the_rooms_admins_register_it_or_change_its_subscriptions(
    mx_hub: Hub, listening: Listening, new_user: NewUser, bot: MatrixUser
) -> None:
    lurah, warga = await new_user("lurah"), await new_user("warga")
    room_id = await lurah.create_room(name="Kelurahan Kraton Kidul", invite=[warga.user_id, bot.user_id])
    await warga.join(room_id)

    async def bot_joined() -> bool:
        return await lurah.membership(room_id, bot.user_id) == "join"

    await wait_until(bot_joined, 20, "the bot to join")
    await listening.handled_kind("member", room_id)
    await listening.settle()
    code = await relay_code(mx_hub, "kota-pekalongan")

    # A member (power 0 against state_default 50) changes nothing, and reading stays open to them.
    assert await ask(listening, warga, room_id, bot.user_id, f"!kelurahan {code}") == [ADMINS_ONLY]
    assert await ask(listening, warga, room_id, bot.user_id, "!langganan kota-pekalongan") == [ADMINS_ONLY]
    assert await room_state(mx_hub, room_id) == (None, None)
    (hours,) = await ask(listening, warga, room_id, bot.user_id, "!jam kota-pekalongan")
    assert hours.splitlines()[0] == "Jam layanan Dindukcapil Kota Pekalongan:"

    # The room's creator registers it with the same code.
    assert await ask(listening, lurah, room_id, bot.user_id, f"!kelurahan {code}") == [
        "Grup ini terdaftar sebagai penerus informasi Dindukcapil Kota Pekalongan. Terima kasih."
    ]
    assert await room_state(mx_hub, room_id) == ("confirmed", "kota-pekalongan")
    assert await ask(listening, warga, room_id, bot.user_id, "!berhenti") == [ADMINS_ONLY]
    assert await room_state(mx_hub, room_id) == ("confirmed", "kota-pekalongan")

    # Given the power to change the room's state, the member may.
    path = f"/rooms/{quote(room_id)}/state/m.room.power_levels/"
    levels = await lurah.call("GET", path)
    levels["users"][warga.user_id] = levels.get("state_default", 50)
    await lurah.call("PUT", path, levels)
    assert await ask(listening, warga, room_id, bot.user_id, "!berhenti") == [
        "Anda berhenti berlangganan semua topik."
    ]
    assert await room_state(mx_hub, room_id) == ("unsubscribed", "kota-pekalongan")
