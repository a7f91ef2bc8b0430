"""Sending through the loopback Cloud API: which form each kind takes, what each of Meta's answers comes
to, the limits that are shared between workers (throughput, pair rate, messaging tier) and the doctor's
credentials check."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from channels.base import (
    Button,
    Content,
    NoPacing,
    Outbound,
    Outcome,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
)
from channels.whatsapp import WhatsAppChannel
from hub.ratelimit import RedisPacer, shared_count
from tests.channels.whatsapp.conftest import ChannelFactory
from tests.fakes.whatsapp_cloud import FakeWhatsApp

CITIZEN = "6281234567890"
ADDRESS = "+" + CITIZEN

ANNOUNCEMENT = Content(
    text="Dindukcapil Kota Serang\nLayanan tatap muka ditutup sementara.\n\nMasih dilayani:\n• legalisir",
    html=(
        "<b>Dindukcapil Kota Serang</b>\nLayanan tatap muka <b>ditutup sementara</b>.\n\n"
        "Masih dilayani:\n• legalisir"
    ),
    subject="Kota Serang: layanan tatap muka ditutup",
)


class RecordingPacer(NoPacing):
    """Never waits; remembers the pauses the adapter asked every worker to keep."""

    def __init__(self) -> None:
        self.pauses: list[tuple[str, float]] = []

    async def pause(self, key: str, seconds: float) -> None:
        self.pauses.append((key, seconds))


async def send(channel: WhatsAppChannel, items: Sequence[Outbound], pacer: Any = None) -> dict[int, Outcome]:
    return {d: o async for d, o in channel.send(items, pacer or NoPacing())}


async def send_one(channel: WhatsAppChannel, item: Outbound, pacer: Any = None) -> Outcome:
    return (await send(channel, [item], pacer))[item.delivery_id]


# ------------------------------------------------------------------------------------------------ forms


async def test_an_announcement_goes_as_its_template_with_one_line_parameters(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    outcome = await send_one(whatsapp, Outbound(701, ADDRESS, ANNOUNCEMENT, kind="announcement"))
    [message] = fake_whatsapp.messages(CITIZEN)
    assert outcome == Sent(provider_id=message.id)
    assert (message.type, message.template, message.language, message.biz_opaque_callback_data) == (
        "template", "pengumuman_dukcapil", "id", "701",
    )  # fmt: skip
    assert message.parameters == [
        "Kota Serang: layanan tatap muka ditutup",
        "*Dindukcapil Kota Serang* · Layanan tatap muka *ditutup sementara*. Masih dilayani: • legalisir",
    ]


async def test_the_template_language_follows_the_recipients_locale(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    english = Content(text="Counters closed.", subject="Closed", locale="en")
    malay = Content(text="Kaunter ditutup.", subject="Tutup", locale="ms")  # no such template: Indonesian
    await send(whatsapp, [Outbound(1, ADDRESS, english, kind="announcement")])
    await send(whatsapp, [Outbound(2, "+6281234567891", malay, kind="announcement")])
    assert [(m.language, m.parameters) for m in fake_whatsapp.messages()] == [
        ("en", ["Closed", "Counters closed."]),
        ("id", ["Tutup", "Kaunter ditutup."]),
    ]


async def test_an_answer_inside_the_window_is_free_text_in_whatsapp_markup(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    fake_whatsapp.user_writes(CITIZEN, "JAM")
    content = Content(
        text="Jam layanan\nSenin–Kamis 08.00–11.00",
        html='<b>Jam layanan</b>\nSenin–Kamis <i>08.00–11.00</i>\nInfo: <a href="https://dukcapil.example/jam">laman</a>',
    )
    outcome = await send_one(whatsapp, Outbound(9, ADDRESS, content, lane="urgent", kind="reply"))
    [message] = fake_whatsapp.messages(CITIZEN)
    assert (outcome, message.type) == (Sent(provider_id=message.id), "text")
    assert (
        message.text == "*Jam layanan*\nSenin–Kamis _08.00–11.00_\nInfo: laman (https://dukcapil.example/jam)"
    )


async def test_an_answer_outside_the_window_goes_as_the_kinds_template(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    content = Content(text="Permohonan KTP-el Anda\nsudah bisa diambil.")
    outcome = await send_one(whatsapp, Outbound(10, ADDRESS, content, kind="reply"))
    [message] = fake_whatsapp.messages(CITIZEN)
    assert fake_whatsapp.error_codes(CITIZEN) == [131047]
    assert (outcome, message.template, message.parameters) == (
        Sent(provider_id=message.id), "balasan_dukcapil", ["Permohonan KTP-el Anda · sudah bisa diambil."],
    )  # fmt: skip


async def test_an_answer_outside_the_window_without_a_template_is_rejected_naming_the_key(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    outcome = await send_one(whatsapp, Outbound(11, ADDRESS, Content(text="Terdaftar."), kind="confirmation"))
    assert outcome == Rejected(
        "the citizen has not written in 24 h and no template is set for confirmation messages "
        "(channels.whatsapp.templates.confirmation)"
    )
    assert fake_whatsapp.messages() == []


async def test_choices_become_reply_buttons_a_list_or_spelt_out_text(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    numbers = ["6281234567801", "6281234567802", "6281234567803"]
    for number in numbers:
        fake_whatsapp.user_writes(number, "LANGGANAN")
    link = Button("Laman kantor", url="https://dukcapil.example/serang")
    few = (Button("KTP-el", data="s:1"), Button("Kartu Identitas Anak", data="s:2"), link)
    some = tuple(Button(f"Topik {n}", data=f"s:{n}") for n in range(5))
    many = tuple(Button(f"Kantor {n}", data=f"o:{n}") for n in range(12))
    items = [
        Outbound(n, "+" + number, Content(text="Pilih topik:", buttons=buttons), kind="reply")
        for n, (number, buttons) in enumerate(zip(numbers, (few, some, many), strict=True))
    ]
    await send(whatsapp, items)
    sent = [fake_whatsapp.messages(n)[0] for n in numbers]
    assert [(m.type, m.interactive, m.buttons) for m in sent] == [
        ("interactive", "button", [("s:1", "KTP-el"), ("s:2", "Kartu Identitas Anak")]),
        ("interactive", "list", [(f"s:{n}", f"Topik {n}") for n in range(5)]),
        ("text", None, []),
    ]
    assert sent[0].text == "Pilih topik:\n\nLaman kantor: https://dukcapil.example/serang"
    assert sent[2].text == "Pilih topik:\n\n" + "\n".join(f"• Kantor {n}" for n in range(12))


async def test_an_answer_longer_than_one_message_is_rejected_before_sending(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    fake_whatsapp.user_writes(CITIZEN, "LAYANAN")
    outcome = await send_one(whatsapp, Outbound(17, ADDRESS, Content(text="x" * 4097), kind="reply"))
    assert outcome == Rejected("the WhatsApp text is 4097 characters; at most 4096 go in one message")
    assert fake_whatsapp.messages() == []


# ------------------------------------------------------------------------------------------------ outcomes


async def test_a_number_without_whatsapp_is_gone_with_the_fallback_channel(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    fake_whatsapp.add_non_user(CITIZEN)
    outcome = await send_one(whatsapp, Outbound(12, ADDRESS, ANNOUNCEMENT, kind="announcement"))
    assert outcome == RecipientGone(
        "WhatsApp error 131026: (#131026) Message Undeliverable (Unable to deliver message. Reasons can "
        "include: the recipient phone number is not a WhatsApp phone number.)",
        fallback="sms",
    )


async def test_throughput_and_pair_rate_answers_hold_the_right_key_in_every_worker(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    pacer = RecordingPacer()
    item = Outbound(13, ADDRESS, ANNOUNCEMENT, kind="announcement")
    fake_whatsapp.fail_next(130429, retry_after=3)
    fake_whatsapp.fail_next(130429)
    fake_whatsapp.fail_next(131056)
    outcomes = [await send_one(whatsapp, item, pacer) for _ in range(3)]
    assert [(type(o), o.delay, o.provider) for o in outcomes if isinstance(o, RetryLater)] == [
        (RetryLater, 3.0, True),
        (RetryLater, 4.0, True),  # no Retry-After: backoff, doubled by the second in a row
        (RetryLater, 6.0, True),  # one user too often: that pair waits its interval
    ]
    [pair] = [r.key for r in whatsapp.rates(CITIZEN)[1:]]
    assert pacer.pauses == [
        (f"wa:{fake_whatsapp.phone_number_id}", 3.0),
        (f"wa:{fake_whatsapp.phone_number_id}", 4.0),
        (pair, 6.0),
    ]
    assert CITIZEN not in pair  # the pair key holds a keyed hash, not the number


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        (131053, None, RetryLater),
        (131000, 500, RetryLater),
        (2, 503, RetryLater),
        (132000, None, Rejected),
        (131009, None, Rejected),
    ],
)
async def test_meta_trouble_retries_at_no_cost_and_refusals_are_rejected(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel, code: int, http_status: int | None, expected: type
) -> None:
    fake_whatsapp.fail_next(code, http_status=http_status)
    outcome = await send_one(whatsapp, Outbound(14, ADDRESS, ANNOUNCEMENT, kind="announcement"))
    assert type(outcome) is expected
    assert getattr(outcome, "provider", None) is (True if expected is RetryLater else None)
    assert outcome.reason.startswith(f"WhatsApp error {code}: (#{code}) ")


async def test_a_refused_token_retries_and_tells_the_operator_without_the_token(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory, caplog: pytest.LogCaptureFixture
) -> None:
    channel = await make_whatsapp(token="EAAexpiredtoken")
    with caplog.at_level(logging.WARNING, logger="channels.whatsapp"):
        outcome = await send_one(channel, Outbound(15, ADDRESS, ANNOUNCEMENT, kind="announcement"))
    assert isinstance(outcome, RetryLater) and outcome.provider
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("whatsapp: Meta refused the access token (WhatsApp error 190:")
    assert "EAAexpiredtoken" not in caplog.text and CITIZEN[2:] not in caplog.text


async def test_an_address_that_is_no_mobile_number_is_gone_without_a_request(
    fake_whatsapp: FakeWhatsApp, whatsapp: WhatsAppChannel
) -> None:
    outcome = await send_one(whatsapp, Outbound(16, "+62215551234", ANNOUNCEMENT, kind="announcement"))
    assert isinstance(outcome, RecipientGone) and outcome.fallback is None
    assert fake_whatsapp.messages() == fake_whatsapp.errors == []


# ------------------------------------------------------------------------------------------------ limits


async def test_the_tier_defers_new_recipients_until_the_window_frees(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory
) -> None:
    fake_whatsapp.set_throughput(100_000)
    fake_whatsapp.pair_seconds = 0.001  # no shared pacer here: the test is about the tier
    # Short enough to wait out, long enough for 251 sends on a busy machine.
    fake_whatsapp.messaging_limit_window = 5
    channel = await make_whatsapp(messaging_limit=250, messaging_limit_window_seconds=5)
    numbers = [f"+628123450{n:04d}" for n in range(251)]
    items = [Outbound(n, a, ANNOUNCEMENT, kind="announcement") for n, a in enumerate(numbers)]
    outcomes = await send(channel, items)
    deferred = {d: o for d, o in outcomes.items() if not isinstance(o, Sent)}
    assert len(deferred) == 1 and len(fake_whatsapp.messages()) == 250
    [(late, outcome)] = deferred.items()
    assert isinstance(outcome, RetryLater) and (outcome.reason, outcome.provider, outcome.quota) == (
        "WhatsApp messaging limit reached: 250 recipients per 5 s; continues when the window frees",
        True,
        True,
    )
    assert 0.5 < (outcome.delay or 0) <= 5.5  # when the oldest leaves the window, and Meta's lag
    # Someone already reached in this window is no new recipient: a correction goes out.
    earlier = next(n for n in range(251) if n != late)
    assert isinstance(
        await send_one(channel, Outbound(900, numbers[earlier], ANNOUNCEMENT, kind="correction")), Sent
    )
    await asyncio.sleep(outcome.delay or 0)
    assert isinstance(await send_one(channel, items[late]), Sent)
    assert fake_whatsapp.rate_limit_errors == 0


async def test_two_workers_share_one_tier_through_redis(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory, redis_url: str
) -> None:
    fake_whatsapp.set_throughput(100_000)
    redis = Redis.from_url(redis_url)
    workers = [await make_whatsapp(messaging_limit=250, messaging_limit_window_seconds=60) for _ in range(2)]
    for worker in workers:
        worker.use_shared_limits(shared_count(redis, f"t-wa-{id(workers)}", b"k"))
    numbers = [f"+628123450{n:04d}" for n in range(300)]
    try:
        results = await asyncio.gather(
            *(
                send(
                    w,
                    [
                        Outbound(n, a, ANNOUNCEMENT, kind="announcement")
                        for n, a in enumerate(numbers)
                        if n % 2 == i
                    ],
                )
                for i, w in enumerate(workers)
            )
        )
    finally:
        await redis.aclose()
    outcomes = [o for r in results for o in r.values()]
    assert sum(isinstance(o, Sent) for o in outcomes) == 250 == len(fake_whatsapp.messages())
    deferred = [o for o in outcomes if isinstance(o, RetryLater)]
    assert len(deferred) == 50 and all(o.quota and 0.6 < (o.delay or 0) <= 60.6 for o in deferred)
    assert fake_whatsapp.rate_limit_errors == 0


async def test_two_workers_keep_the_numbers_throughput_and_pair_rate(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory, redis_url: str
) -> None:
    fake_whatsapp.set_throughput(20)
    fake_whatsapp.pair_seconds = 1.0
    workers = [await make_whatsapp(rate_per_second=20, pair_interval_seconds=1) for _ in range(2)]
    clients = [Redis.from_url(redis_url) for _ in workers]
    prefix = f"t-wa-pace-{id(workers)}"
    numbers = [f"+628123450{n:04d}" for n in range(40)]
    fake_whatsapp.user_writes(numbers[0], "JAM", ago=60)  # earlier: not in this second's throughput
    # 40 announcements over two workers, and three answers to one citizen from both.
    batches = [
        [
            Outbound(w * 100 + n, a, ANNOUNCEMENT, kind="announcement")
            for n, a in enumerate(numbers)
            if n % 2 == w
        ]
        + [
            Outbound(w * 100 + 50 + k, numbers[0], Content(text=f"Jawaban {k}"), kind="reply")
            for k in range(2 - w)
        ]
        for w in range(2)
    ]
    try:
        results = await asyncio.gather(
            *(
                send(w, batch, RedisPacer(c, prefix))
                for w, batch, c in zip(workers, batches, clients, strict=True)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
    assert all(isinstance(o, Sent) for r in results for o in r.values())
    assert (fake_whatsapp.rate_limit_errors, fake_whatsapp.max_per_second <= 20) == (0, True)
    to_one = [m.at for m in fake_whatsapp.messages(numbers[0])]
    assert len(to_one) == 4 and all(b - a >= 1.0 for a, b in itertools.pairwise(to_one))


# ------------------------------------------------------------------------------------------------ doctor


async def test_check_credentials_names_the_phone_number(
    fake_whatsapp: FakeWhatsApp, make_whatsapp: ChannelFactory
) -> None:
    channel = await make_whatsapp()
    found = await channel.check_credentials()
    assert found == f"phone number id {fake_whatsapp.phone_number_id} is 6281100000000 (Disdukcapil)"
    refused = await make_whatsapp(token="EAAwrong")
    with pytest.raises(RuntimeError) as raised:
        await refused.check_credentials()
    assert str(raised.value).startswith("WhatsApp error 190: ") and "EAAwrong" not in str(raised.value)


async def test_rates_are_the_numbers_throughput_and_the_pair_interval(
    make_whatsapp: ChannelFactory, fake_whatsapp: FakeWhatsApp
) -> None:
    overall, pair = (await make_whatsapp()).rates(CITIZEN)
    assert overall == Rate(f"wa:{fake_whatsapp.phone_number_id}", 80.0, 1.0)
    assert (pair.count, pair.period) == (1, 6.0)
    slower, _ = (await make_whatsapp(rate_per_second=1000, safety_margin=0.02)).rates(CITIZEN)
    assert slower == Rate(f"wa:{fake_whatsapp.phone_number_id}", 1000.0, 1.02)
