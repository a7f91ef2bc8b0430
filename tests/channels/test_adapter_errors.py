"""An exception inside an adapter, for one item, ends as that item's outcome (defect 13, adapter side).

Each adapter gets a batch of two items and a failure injected for one of them. The broken one comes back
"rejected" with the reason (staff read it in the status), logged once; the other is sent; the batch never
hangs. Before, a line break in an email subject made the sender raise and the batch wait for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from channels.base import Content, NoPacing, Outbound, Outcome, Rejected, Sent
from channels.email import EmailChannel
from channels.matrix import MatrixChannel
from channels.sms import SmsChannel
from channels.telegram import TelegramChannel
from tests.conftest import Mailbox
from tests.fakes.telegram_api import FakeTelegram
from tests.services.synapse import MatrixUser, NewUser, Person


async def send(channel: Any, items: Sequence[Outbound]) -> dict[int, Outcome]:
    """Every item's outcome, within 20 s (a batch that hangs fails the test instead of stalling it)."""

    async def collect() -> dict[int, Outcome]:
        return {i: o async for i, o in channel.send(items, NoPacing())}

    return await asyncio.wait_for(collect(), 20)


def logged_once(caplog: pytest.LogCaptureFixture, delivery_id: int) -> bool:
    lines = [
        r for r in caplog.records if r.levelno >= logging.ERROR and f"delivery {delivery_id} " in r.message
    ]
    return len(lines) == 1


async def test_email_with_a_line_break_in_the_subject_is_rejected(
    smtp: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    box, port = smtp
    email = EmailChannel.from_settings(
        {
            "host": "127.0.0.1",
            "port": port,
            "sender": "Dukcapil <hub@example.com>",
            "allow_test_domains": True,
        },
        public_url="http://hub.test",
    )
    items = [
        Outbound(1, "a@example.com", Content(text="Isi", subject="Jam layanan\nberubah")),
        Outbound(2, "b@example.com", Content(text="Isi", subject="Jam layanan berubah")),
    ]
    try:
        outcomes = await send(email, items)
    finally:
        await email.close()
    assert outcomes[1] == Rejected(
        "the message cannot be built: Header values may not contain linefeed or carriage return characters"
    )
    assert isinstance(outcomes[2], Sent)
    assert [m["To"] for m in box.messages] == ["b@example.com"]


async def test_telegram_adapter_error_is_rejected_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import channels.telegram.channel as module

    original = module.content_html

    def breaks(content: Content) -> str:
        if "rusak" in content.text:
            raise KeyError("entity table")
        return original(content)

    monkeypatch.setattr(module, "content_html", breaks)
    with FakeTelegram() as fake:
        fake.add_private(501)
        fake.add_private(502)
        telegram = TelegramChannel.from_settings(
            {"token": fake.token, "base_url": fake.base_url}, public_url="http://hub.test"
        )
        try:
            outcomes = await send(
                telegram, [Outbound(1, "501", Content("rusak")), Outbound(2, "502", Content("baik"))]
            )
        finally:
            await telegram.close()
        assert [m.chat_id for m in fake.messages()] == [502]
    assert outcomes[1] == Rejected("telegram adapter error: KeyError: 'entity table'")
    assert isinstance(outcomes[2], Sent)
    assert logged_once(caplog, 1)


async def test_sms_adapter_error_is_rejected_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sms = SmsChannel.from_settings(
        {
            "dlr_secret": "rahasia",
            "gateways": [
                {"driver": "kannel", "url": "http://127.0.0.1:9", "username": "hub", "password": "x"}
            ],
        },
        public_url="http://hub.test",
    )
    gateway = sms.gateways[0]

    async def fake_send(to: str, text: str, **kwargs: Any) -> Outcome:
        if to.endswith("01"):
            raise AttributeError("'NoneType' object has no attribute 'encode'")
        return Sent("k-1")

    monkeypatch.setattr(gateway, "send", fake_send)
    items = [Outbound(1, "081234567801", Content("Info")), Outbound(2, "081234567802", Content("Info"))]
    try:
        outcomes = await send(sms, items)
    finally:
        await sms.close()
    assert outcomes == {
        1: Rejected("sms adapter error: AttributeError: 'NoneType' object has no attribute 'encode'"),
        2: Sent("k-1"),
    }
    assert logged_once(caplog, 1)


async def test_matrix_adapter_error_is_rejected_and_logged_once(
    synapse: Any,
    bot: MatrixUser,
    bot_person: Person,
    new_user: NewUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import channels.matrix.channel as module

    original = module.render

    def breaks(content: Content) -> tuple[str, str]:
        if "rusak" in content.text:
            raise UnicodeError("lone surrogate")
        return original(content)

    monkeypatch.setattr(module, "render", breaks)
    alice = await new_user("alice")
    rooms = [await alice.create_room(name=f"Kelurahan {n}") for n in (1, 2)]
    for room in rooms:
        await alice.invite(room, bot.user_id)
        await bot_person.join(room)
    matrix = MatrixChannel.from_settings(
        {
            "homeserver": synapse.base_url,
            "user_id": bot.user_id,
            "access_token": bot.access_token,
            "device_id": bot.device_id,
            "store_path": str(tmp_path / "store"),
        },
        public_url="http://hub.test",
    )
    try:
        outcomes = await send(
            matrix, [Outbound(1, rooms[0], Content("rusak")), Outbound(2, rooms[1], Content("baik"))]
        )
    finally:
        await matrix.close()
    assert outcomes[1] == Rejected("matrix adapter error: UnicodeError: lone surrogate")
    assert isinstance(outcomes[2], Sent)
    assert logged_once(caplog, 1)
