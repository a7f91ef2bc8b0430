"""The Matrix bot as deployed: `hub worker` / `hub run` from a settings file, a citizen on a real Synapse.

The bot listens in the worker process that owns its device (its declared capability), so inviting it and
writing `!langganan` works with nothing but the processes an operator starts. An API process never logs in
to Matrix, so a call to the Matrix webhook route cannot take the device from the workers.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployed.conftest import Deployment
from tests.integration.matrix.conftest import matrix_conf
from tests.services.synapse import MatrixUser, NewUser, Person

SUBSCRIBED = "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim !berhenti untuk berhenti."


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


def subscription_state(deployment: Deployment, address: str) -> str | None:
    """What the database holds for the citizen (the test's only look behind the hub's interfaces)."""
    db = deployment.settings.database.url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT s.state FROM subscriptions s JOIN endpoints e ON e.id = s.endpoint_id "
            "JOIN topics t ON t.id = s.topic_id "
            "WHERE e.channel = 'matrix' AND e.address = ? AND t.slug = 'kota-pekalongan'",
            (address,),
        ).fetchone()
    return row[0] if row else None


async def subscribe_by_chat(deployment: Deployment, citizen: Person, bot: MatrixUser) -> None:
    """The citizen opens a direct chat with the bot, writes `!langganan`, and is answered."""
    room_id = await citizen.create_room(invite=[bot.user_id], is_direct=True)

    async def joined() -> bool:
        return await citizen.membership(room_id, bot.user_id) == "join"

    await until(joined, 30, "the bot to accept the citizen's invite")
    await citizen.say(room_id, "!langganan kota-pekalongan")

    async def replies() -> list[str]:
        return [
            e["content"].get("body", "")
            for e in await citizen.messages(room_id)
            if e["sender"] == bot.user_id
        ]

    assert await until(replies, 30, "the bot's reply") == [SUBSCRIBED]
    assert subscription_state(deployment, citizen.user_id) == "confirmed"


@pytest.mark.parametrize("process", ["worker", "run"])
async def test_matrix_bot_joins_and_answers_in_the_deployed_worker(
    make_deployment: Callable[..., Deployment],
    synapse: Any,
    bot: MatrixUser,
    new_user: NewUser,
    tmp_path: Path,
    process: str,
) -> None:
    deployment = make_deployment(channels={"matrix": matrix_conf(synapse.base_url, bot, tmp_path / "store")})
    if process == "worker":
        deployment.start_worker()
    else:
        deployment.start_run()
    await subscribe_by_chat(deployment, await new_user("citra"), bot)


async def test_an_api_process_never_takes_the_matrix_device_from_the_workers(
    make_deployment: Callable[..., Deployment],
    synapse: Any,
    bot: MatrixUser,
    new_user: NewUser,
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    deployment = make_deployment(channels={"matrix": matrix_conf(synapse.base_url, bot, store)})
    api, url = deployment.start_api()
    # Anyone on the internet can call the webhook route; Matrix takes no webhooks.
    answer = httpx.post(f"{url}/v1/channels/matrix/webhook", json={"hello": "matrix"}, timeout=30)
    assert (answer.status_code, answer.json()) == (404, {"error": "channel 'matrix' takes no webhooks"})

    worker = deployment.start_worker()
    await subscribe_by_chat(deployment, await new_user("dewi"), bot)
    lock = store / f"{matrix_conf(synapse.base_url, bot, store)['device_id']}.lock"
    assert lock.read_text().strip() == str(worker.pid)  # the worker owns the device, not the API
    assert api.poll() is None
