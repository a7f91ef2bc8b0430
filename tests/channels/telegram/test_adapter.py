"""The Telegram adapter against the loopback Bot API: sending, outcomes, pacing, webhooks, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import Sequence

import httpx
import pytest
from aiohttp import web

from channels.base import (
    Button,
    Content,
    Inbound,
    InvalidAddress,
    Lane,
    Moved,
    NoPacing,
    Outbound,
    Outcome,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    WebhookRejected,
    WebhookRequest,
    load_channel_class,
)
from channels.telegram import TelegramChannel, split_html, visible_text
from tests.fakes.telegram_api import FakeTelegram, eventually

USER = 1001
GROUP = -4001
BOT_KEY = "tg:123456789"


class TestPacer:
    """An in-memory pacer with sliding windows and real sleeps; records every wait and pause.

    A small margin keeps it just under the fake's windows, which time requests on arrival.
    """

    __test__ = False

    def __init__(self, enforce: bool = True, margin: float = 0.25) -> None:
        self.enforce = enforce
        self.margin = margin
        self.waits: list[tuple[tuple[Rate, ...], Lane]] = []
        self.pauses: list[tuple[str, float]] = []
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._paused_until: dict[str, float] = {}

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        self.waits.append((tuple(rates), lane))
        if not self.enforce:
            return
        while True:
            now = time.monotonic()
            delay = 0.0
            for rate in rates:
                delay = max(delay, self._paused_until.get(rate.key, 0.0) - now)
                events = self._events[rate.key]
                period = rate.period * (1 + self.margin)
                while events and events[0] <= now - period:
                    events.popleft()
                if len(events) >= rate.count:
                    delay = max(delay, events[len(events) - int(rate.count)] + period - now)
            if delay <= 0:
                break
            await asyncio.sleep(delay)
        for rate in rates:
            self._events[rate.key].append(time.monotonic())

    async def acquire(self, rates: Sequence[Rate], lane: Lane = "bulk", **_: object) -> None:
        await self.wait(rates, lane)

    async def release(self, permit: object) -> None:
        return None

    async def pause(self, key: str, seconds: float) -> None:
        self.pauses.append((key, seconds))
        self._paused_until[key] = time.monotonic() + seconds

    async def paused_for(self, key: str) -> float:
        return max(0.0, self._paused_until.get(key, 0.0) - time.monotonic())


async def send_all(
    channel: TelegramChannel, items: list[Outbound], pacer: object = None
) -> dict[int, Outcome]:
    results: dict[int, Outcome] = {}
    async for delivery_id, outcome in channel.send(items, pacer or NoPacing()):  # type: ignore[arg-type]
        assert delivery_id not in results, "each delivery is reported once"
        results[delivery_id] = outcome
    assert set(results) == {item.delivery_id for item in items}
    return results


async def send_one(channel: TelegramChannel, item: Outbound, pacer: object = None) -> Outcome:
    return (await send_all(channel, [item], pacer))[item.delivery_id]


def item(
    delivery_id: int, address: int | str, text: str = "Halo", *, kind: str = "person", **content: object
) -> Outbound:
    return Outbound(delivery_id, str(address), Content(text=text, **content), endpoint_kind=kind)  # type: ignore[arg-type]


LONG_PARAGRAPH = (
    "Pelayanan perekaman KTP-el dibuka setiap hari kerja di kantor kecamatan. "
    "Bawa Kartu Keluarga asli & fotokopi. Antrean dibatasi <100> orang per hari. "
)


# ------------------------------------------------------------------------------------------------ sending


async def test_plain_send(fake_telegram: FakeTelegram, telegram: TelegramChannel) -> None:
    fake_telegram.add_private(USER)
    outcome = await send_one(telegram, item(1, USER, "Jam buka: 08.00-15.00"))
    [message] = fake_telegram.messages(USER)
    assert outcome == Sent(provider_id=str(message.message_id))
    assert message.text == "Jam buka: 08.00-15.00"
    assert message.parse_mode == "HTML"
    assert message.reply_markup is None


async def test_plain_text_is_escaped_and_html_passes_through(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER)
    fake_telegram.add_private(USER + 1)
    plain = 'Bawa KK & KTP <asli> "wajib"'
    rich = '<b>Jadwal</b> &amp; <a href="https://disdukcapil.example/jadwal">lokasi</a>'
    results = await send_all(
        telegram, [item(1, USER, plain), item(2, USER + 1, "Jadwal & lokasi", html=rich)]
    )
    assert all(isinstance(o, Sent) for o in results.values())
    [first], [second] = fake_telegram.messages(USER), fake_telegram.messages(USER + 1)
    assert first.text == 'Bawa KK &amp; KTP &lt;asli&gt; "wajib"'
    assert first.visible_text == plain
    assert second.text == rich
    assert second.visible_text == "Jadwal & lokasi"


async def test_buttons_go_on_the_message(fake_telegram: FakeTelegram, telegram: TelegramChannel) -> None:
    fake_telegram.add_private(USER)
    buttons = (
        Button("Lihat status", url="https://disdukcapil.example/s/1"),
        Button("Berhenti", data="stop:7"),
    )
    assert isinstance(await send_one(telegram, item(1, USER, buttons=buttons)), Sent)
    [message] = fake_telegram.messages(USER)
    assert message.reply_markup == {
        "inline_keyboard": [
            [{"text": "Lihat status", "url": "https://disdukcapil.example/s/1"}],
            [{"text": "Berhenti", "callback_data": "stop:7"}],
        ]
    }


async def test_long_text_is_split_in_order_and_paced(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER)
    paragraphs = [
        (f"Bagian {n}. " + LONG_PARAGRAPH * 12).strip() for n in range(1, 6)
    ]  # ~1,900 characters each
    text = "\n\n".join(paragraphs)
    buttons = (Button("Lokasi", url="https://disdukcapil.example/peta"),)
    pacer = TestPacer()
    outcome = await send_one(telegram, item(1, USER, text, buttons=buttons), pacer)

    messages = fake_telegram.messages(USER)
    assert len(messages) == 3 == telegram.describe(Content(text=text))["parts"]
    assert outcome == Sent(provider_id=str(messages[0].message_id))
    for number, message in enumerate(messages, start=1):
        assert message.visible_text.startswith(f"({number}/3) ")
        assert len(message.visible_text) <= 4096
        # split at paragraph boundaries: every part holds whole paragraphs
        assert message.visible_text.endswith(LONG_PARAGRAPH.strip())
    body = "\n\n".join(m.visible_text.split(" ", 1)[1] for m in messages)
    assert body == text
    assert [m.reply_markup is not None for m in messages] == [False, False, True]
    # one wait per API call, against the bot-wide and the per-chat limit; the fake never said 429
    assert [w[0] for w in pacer.waits] == [
        (Rate(f"{BOT_KEY}:all", 30), Rate(f"{BOT_KEY}:chat:{USER}", 1))
    ] * 3
    assert fake_telegram.too_many_requests == 0


def test_split_keeps_html_valid_across_parts() -> None:
    sentence = "Kalimat ini cukup panjang untuk diuji dengan baik. "
    source = "<b>" + sentence * 200 + "</b> &amp; <i>akhir</i>"
    parts = split_html(source)
    assert len(parts) == 3
    assert parts[0].startswith("(1/3) <b>") and parts[0].endswith(".</b>")  # sentence boundary, tag closed
    assert parts[1].startswith("(2/3) <b>Kalimat")  # reopened
    assert all(len(visible_text(p)) <= 4096 for p in parts)
    assert parts[-1].endswith("&amp; <i>akhir</i>")
    joined = " ".join(visible_text(p).split(" ", 1)[1] for p in parts)
    assert joined == visible_text(source).strip()


def test_split_falls_back_to_words_then_hard_cuts() -> None:
    words = "kata " * 1500  # no sentence or paragraph
    parts = split_html(words)
    assert len(parts) == 2
    assert all(
        p.split(" ", 1)[1].strip().split(" ") == [w for w in p.split(" ", 1)[1].split(" ") if w]
        for p in parts
    )
    assert sum(visible_text(p).count("kata") for p in parts) == 1500

    blob = "&amp;" * 5000  # one huge "word" made of entities: cut between entities, never inside one
    parts = split_html(blob)
    assert len(parts) == 2
    assert all(set(p.split(" ", 1)[1].split("&amp;")) == {""} for p in parts)
    assert sum(visible_text(p).count("&") for p in parts) == 5000


def test_split_counts_utf16_like_telegram() -> None:
    text = "🙂" * 3000  # 6,000 UTF-16 units: two messages, though only 3,000 code points
    parts = split_html(text)
    assert len(parts) == 2
    assert all(len(visible_text(p).encode("utf-16-le")) // 2 <= 4096 for p in parts)
    assert split_html("<b>pendek</b>") == ["<b>pendek</b>"]


async def test_concurrent_chats_keep_order_within_each_chat(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    groups = [GROUP - n for n in range(4)]
    for chat in groups:
        fake_telegram.add_group(chat)
    items = [
        item(100 * i + j, chat, f"pesan {j}", kind="group") for j in range(5) for i, chat in enumerate(groups)
    ]
    results = await send_all(telegram, items)
    assert all(isinstance(o, Sent) for o in results.values())
    for chat in groups:
        assert fake_telegram.texts(chat) == [f"pesan {j}" for j in range(5)]


async def test_paid_broadcast_uses_the_paid_rate(fake_telegram: FakeTelegram, make_telegram) -> None:
    fake_telegram.set_overall_rate(1000)
    channel = await make_telegram(paid_broadcast=True)
    users = list(range(2001, 2061))
    for user in users:
        fake_telegram.add_private(user)
    pacer = TestPacer()
    results = await send_all(channel, [item(user, user) for user in users], pacer)
    assert all(isinstance(o, Sent) for o in results.values())
    assert pacer.waits[0][0][0] == Rate(f"{BOT_KEY}:all", 1000)
    assert all(m.params["paid"] for m in fake_telegram.messages())
    assert fake_telegram.too_many_requests == 0  # 60 in well under a second: 30/s would have refused


# ------------------------------------------------------------------------------------------------ outcomes


async def test_flood_429_gives_retry_later_with_exact_delay(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER)
    fake_telegram.force_flood(7, chat_id=USER)
    pacer = TestPacer(enforce=False)
    results = await send_all(telegram, [item(1, USER), item(2, USER)], pacer)
    assert results[1] == RetryLater("flood control: retry after 7s", delay=7.0, provider=True)
    assert results[2] == results[1]  # not sent ahead of the first, which must go first
    # Telegram does not say which limit it was: the whole bot holds off, in every worker.
    assert pacer.pauses == [(f"{BOT_KEY}:all", 7.0), (f"{BOT_KEY}:chat:{USER}", 7.0)]
    assert fake_telegram.messages(USER) == []
    assert fake_telegram.too_many_requests == 1


async def test_unpaced_burst_hits_the_fakes_chat_limit(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER)
    fake_telegram.add_private(USER + 1)
    results = await send_all(telegram, [item(1, USER), item(2, USER + 1), item(3, USER)])
    assert results[1] == Sent(provider_id=results[1].provider_id)  # type: ignore[union-attr]
    assert isinstance(results[2], Sent)
    assert results[3] == RetryLater("flood control: retry after 1s", delay=1.0, provider=True)
    assert fake_telegram.too_many_requests == 1


async def test_flood_mid_message_waits_and_sends_only_the_rest(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_group(GROUP)
    fake_telegram.force_flood(1, chat_id=GROUP, skip=1)  # the second part is refused once
    text = "\n\n".join(["Paragraf panjang. " * 150] * 2)
    pacer = TestPacer(enforce=False)
    outcome = await send_one(telegram, item(1, GROUP, text, kind="group"), pacer)
    messages = fake_telegram.messages(GROUP)
    assert outcome == Sent(provider_id=str(messages[0].message_id))
    assert [m.visible_text[:6] for m in messages] == ["(1/2) ", "(2/2) "]  # no part twice
    assert pacer.pauses == [(f"{BOT_KEY}:all", 1.0), (f"{BOT_KEY}:group:{GROUP}", 1.0)]
    assert pacer.waits[0][0][1] == Rate(f"{BOT_KEY}:group:{GROUP}", 20, 60.0)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("blocked", RecipientGone("Forbidden: bot was blocked by the user")),
        ("deactivated", RecipientGone("Forbidden: user is deactivated")),
        ("unknown", RecipientGone("Chat not found")),
        ("kicked", RecipientGone("Forbidden: bot was kicked from the group chat")),
        ("migrated", Moved("-1009990001")),
    ],
)
async def test_permanent_failures(
    fake_telegram: FakeTelegram, telegram: TelegramChannel, setup: str, expected: Outcome
) -> None:
    chat = USER if setup in ("blocked", "deactivated", "unknown") else GROUP
    if setup == "blocked":
        fake_telegram.add_blocked(chat)
    elif setup == "deactivated":
        fake_telegram.add_deactivated(chat)
    elif setup == "kicked":
        fake_telegram.add_kicked_group(chat)
    elif setup == "migrated":
        fake_telegram.add_migrated_group(chat, -1009990001)
    kind = "person" if chat == USER else "group"
    results = await send_all(telegram, [item(1, chat, kind=kind), item(2, chat, kind=kind)])
    assert results == {1: expected, 2: expected}
    assert len(fake_telegram.errors_for("sendMessage")) == 1  # the second item was not tried


async def test_unblocked_user_receives_again(fake_telegram: FakeTelegram, telegram: TelegramChannel) -> None:
    fake_telegram.add_blocked(USER)
    assert isinstance(await send_one(telegram, item(1, USER)), RecipientGone)
    fake_telegram.unblock(USER)
    assert isinstance(await send_one(telegram, item(2, USER)), Sent)


async def test_server_errors_retry_and_bad_requests_reject(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER)
    fake_telegram.add_group(GROUP)
    fake_telegram.force_error(500, "Internal Server Error", chat_id=USER)
    assert await send_one(telegram, item(1, USER)) == RetryLater("Internal Server Error", provider=True)
    bad = await send_one(telegram, item(2, GROUP, "x", html="<blink>x</blink>", kind="group"))
    assert isinstance(bad, Rejected) and "can't parse entities" in bad.reason.lower()


async def test_channel_by_username(fake_telegram: FakeTelegram, telegram: TelegramChannel) -> None:
    fake_telegram.add_channel(-1005550001, username="InfoDukcapil")
    address = telegram.normalize_address("@InfoDukcapil")
    assert isinstance(await send_one(telegram, item(1, address, kind="channel")), Sent)
    assert fake_telegram.texts(-1005550001) == ["Halo"]


def test_addresses_and_describe(telegram: TelegramChannel) -> None:
    assert telegram.normalize_address(" 1001 ") == "1001"
    assert telegram.normalize_address("-1001234567890") == "-1001234567890"
    assert telegram.normalize_address("@Info_Dukcapil") == "@info_dukcapil"
    for bad in ("", "abc", "12a", "@ab", "0", "+62812"):
        with pytest.raises(InvalidAddress):
            telegram.normalize_address(bad)
    assert telegram.describe(Content(text="a < b")) == {"parts": 1, "characters": 5}
    assert load_channel_class("telegram") is TelegramChannel


# ------------------------------------------------------------------------------------------------ inbound


async def _ignore(record: Inbound) -> None:
    return None


def _request(update: dict, secret: str | None) -> WebhookRequest:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return WebhookRequest(headers=headers, query={}, body=json.dumps(update).encode())


async def test_webhook_checks_the_secret(telegram: TelegramChannel, webhook_secret: str) -> None:
    update = {
        "update_id": 1,
        "message": {
            "message_id": 5,
            "date": 0,
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "A", "language_code": "en-US"},
            "text": "halo",
        },
    }
    for secret in (None, "", "salah", webhook_secret + "x"):
        with pytest.raises(WebhookRejected):
            await telegram.handle_webhook(_request(update, secret))
    lowercase = WebhookRequest(
        {"x-telegram-bot-api-secret-token": webhook_secret}, {}, json.dumps(update).encode()
    )
    records, response = await telegram.handle_webhook(lowercase)
    assert response.status == 200
    assert records == [
        Inbound(
            "telegram", "text", address=str(USER), sender=str(USER), text="halo", locale="en", reply_ref="5"
        )
    ]


async def test_webhook_end_to_end(fake_telegram: FakeTelegram, make_telegram, webhook_secret: str) -> None:
    """The fake POSTs injected updates to the registered URL; forged calls are refused."""
    received: list[Inbound] = []
    holder: dict[str, TelegramChannel] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            records, reply = await holder["channel"].handle_webhook(
                WebhookRequest(dict(request.headers), dict(request.query), body)
            )
        except WebhookRejected:
            return web.Response(status=403)
        received.extend(records)
        return web.Response(status=reply.status, text=reply.body)

    app = web.Application()
    app.router.add_post("/v1/channels/telegram/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        public_url = f"http://127.0.0.1:{port}"
        holder["channel"] = await make_telegram(public_url=public_url, mode="webhook")
        assert fake_telegram.webhook_url == f"{public_url}/v1/channels/telegram/webhook"
        assert fake_telegram.webhook_secret == webhook_secret

        fake_telegram.add_private(USER)
        fake_telegram.inject_command(USER, "/status 3201-0001")
        fake_telegram.inject_callback(USER, "stop:7")
        await eventually(lambda: len(received) == 2)
        assert received[0].kind == "command" and received[0].command == "status"
        assert received[0].args == ("3201-0001",)
        assert received[1].kind == "button" and received[1].data == "stop:7"
        assert len(fake_telegram.answered_callbacks) == 1
        assert [status for _, status in fake_telegram.webhook_deliveries] == [200, 200]

        async with httpx.AsyncClient() as client:
            forged = await client.post(
                f"{public_url}/v1/channels/telegram/webhook",
                json={"update_id": 99},
                headers={"X-Telegram-Bot-Api-Secret-Token": "x"},
            )
        assert forged.status_code == 403
    finally:
        await runner.cleanup()


async def test_polling_turns_updates_into_records(
    fake_telegram: FakeTelegram, telegram: TelegramChannel
) -> None:
    fake_telegram.add_private(USER, language_code="en")
    fake_telegram.add_private(USER + 1)
    fake_telegram.add_group(GROUP)
    fake_telegram.add_channel(-1005550001)
    received: list[Inbound] = []

    async def sink(record: Inbound) -> None:
        received.append(record)

    fake_telegram.inject_command(USER, "/Jadwal@disdukcapil_test_bot  besok pagi")
    listener = asyncio.create_task(telegram.listen(sink))
    try:
        await eventually(lambda: received)
        fake_telegram.inject_message(USER + 1, "kapan KTP saya jadi?")
        fake_telegram.inject_command(GROUP, "/jam@other_bot", from_id=USER)  # not for us: ignored
        fake_telegram.inject_callback(GROUP, "konfirmasi:12", from_id=USER + 1)
        fake_telegram.inject_my_chat_member(GROUP, "member", from_id=USER)
        fake_telegram.inject_new_chat_members(GROUP, from_id=USER)  # the same addition, reported again
        fake_telegram.inject_my_chat_member(-1005550001, "administrator", from_id=USER)
        fake_telegram.inject_my_chat_member(
            GROUP, "administrator", old_status="member"
        )  # promoted: no record
        fake_telegram.inject_my_chat_member(GROUP, "kicked", from_id=USER)
        await eventually(lambda: len(received) >= 6)
        await eventually(lambda: not fake_telegram.pending_updates())  # offsets confirmed them
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener

    command, text, button, added, channel_added, removed = received
    assert command == Inbound(
        "telegram", "command", address=str(USER), sender=str(USER), command="jadwal", args=("besok", "pagi"),
        text="/Jadwal@disdukcapil_test_bot  besok pagi", locale="en", reply_ref=command.reply_ref,
    )  # fmt: skip
    assert (text.kind, text.text, text.locale, text.chat_kind) == (
        "text",
        "kapan KTP saya jadi?",
        "id",
        "person",
    )
    assert (button.kind, button.data, button.address, button.sender, button.chat_kind) == (
        "button", "konfirmasi:12", str(GROUP), str(USER + 1), "group",
    )  # fmt: skip
    assert (added.kind, added.text, added.address, added.chat_kind) == (
        "member",
        "added",
        str(GROUP),
        "group",
    )
    assert (channel_added.text, channel_added.chat_kind) == ("added", "channel")
    assert (removed.kind, removed.text, removed.address) == ("member", "removed", str(GROUP))
    assert len(fake_telegram.answered_callbacks) == 1  # the adapter stopped the button's spinner


# ------------------------------------------------------------------------------------------- the fake itself


async def test_fake_enforces_its_limits_and_validates(fake_telegram: FakeTelegram) -> None:
    fake_telegram.set_limits(overall_per_second=5)
    users = list(range(3001, 3007))
    for user in users:
        fake_telegram.add_private(user)
    fake_telegram.add_group(GROUP)
    api = f"{fake_telegram.base_url}{fake_telegram.token}"
    async with httpx.AsyncClient() as client:

        async def send(chat_id: int, text: str = "x", **extra: object) -> httpx.Response:
            return await client.post(f"{api}/sendMessage", data={"chat_id": chat_id, "text": text, **extra})

        statuses = [(await send(user)).status_code for user in users]
        assert statuses == [200] * 5 + [429]  # bot-wide window
        refused = (await send(users[-1])).json()
        assert refused["error_code"] == 429 and refused["parameters"]["retry_after"] == 1
        assert refused["description"] == "Too Many Requests: retry after 1"

        fake_telegram.set_limits(overall_per_second=1000)
        assert (await send(users[0])).status_code == 200
        assert (await send(users[0])).status_code == 429  # 1/s per private chat

        group_statuses = [(await send(GROUP)).status_code for _ in range(21)]
        assert group_statuses == [200] * 20 + [429]  # 20/min per group
        assert fake_telegram.errors[-1][2].startswith("Too Many Requests: retry after ")
        assert fake_telegram.too_many_requests == 4

        too_long = await send(users[1], "a" * 4097)
        assert too_long.json()["description"] == "Bad Request: message is too long"
        unclosed = await send(users[2], "<b>tebal", parse_mode="HTML")
        assert unclosed.status_code == 400
        assert unclosed.json()["description"].startswith("Bad Request: can't parse entities")
        unknown = await client.post(f"{api}/sendMessage", json={"chat_id": 99, "text": "x"})
        assert unknown.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: chat not found",
        }
        wrong_token = await client.post(f"{fake_telegram.base_url}1:bad/getMe")
        assert wrong_token.status_code == 401
