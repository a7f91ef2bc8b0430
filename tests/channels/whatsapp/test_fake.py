"""The fake WhatsApp Cloud API behaves as Meta documents (docs/whatsapp.md): these tests pin the rules the
adapter and the integration tests rely on, so a wrong fake cannot make a wrong adapter pass."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.fakes.whatsapp_cloud import TIER_CODE, FakeWhatsApp

APP_SECRET = "rahasia-aplikasi"
CITIZEN = "6281234567890"
TEMPLATE = "pengumuman_dukcapil"


class Receiver:
    """The hub's webhook endpoint as Meta sees it: records raw bodies and headers, answers ``statuses``."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each POST
        self.answers: list[int] = []  # HTTP statuses to answer first, then 200
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, raw))
                    outer.arrivals.append(time.monotonic())
                    status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/channels/whatsapp/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(raw)["entry"][0]["changes"][0]["value"] for _, raw in self.posts]

    def statuses(self) -> list[dict[str, Any]]:
        return [s for value in self.values() for s in value.get("statuses", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fake(receiver: Receiver) -> Iterator[FakeWhatsApp]:
    server = FakeWhatsApp(webhook_url=receiver.url, app_secret=APP_SECRET)
    server.add_template(TEMPLATE, "id", "Pengumuman: {{1}}\n\n{{2}}")
    server.add_template(TEMPLATE, "en", "Notice: {{1}}\n\n{{2}}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Clock:
    """A monotonic clock the test steps, so the windows move without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def send(fake: FakeWhatsApp, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fake.token if token is None else token}"}
    return httpx.post(fake.messages_url, json={"messaging_product": "whatsapp", **body}, headers=headers)


def template(
    to: str = CITIZEN, params: tuple[str, ...] = ("Jadwal", "Buka 08.00"), **extra: Any
) -> dict[str, Any]:
    parameters = [{"type": "text", "text": p} for p in params]
    return {
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": extra.pop("name", TEMPLATE),
            "language": {"code": extra.pop("language", "id")},
            "components": [{"type": "body", "parameters": parameters}],
        },
        **extra,
    }


def text(to: str = CITIZEN, body: str = "Halo") -> dict[str, Any]:
    return {"to": to, "type": "text", "text": {"body": body, "preview_url": False}}


def buttons(to: str = CITIZEN, titles: tuple[str, ...] = ("Ya", "Tidak")) -> dict[str, Any]:
    items = [{"type": "reply", "reply": {"id": f"b{i}", "title": t}} for i, t in enumerate(titles)]
    return {
        "to": to,
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "Lanjut?"}, "action": {"buttons": items}},
    }


def code(response: httpx.Response) -> tuple[int, int]:
    return response.status_code, response.json()["error"]["code"]


def test_template_send_is_accepted_and_recorded(fake: FakeWhatsApp) -> None:
    response = send(fake, template(biz_opaque_callback_data="42"))
    assert response.status_code == 200
    body = response.json()
    wamid = body["messages"][0]["id"]
    assert body == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": CITIZEN, "wa_id": CITIZEN}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }
    [message] = fake.messages("+" + CITIZEN)
    assert (message.id, message.type, message.template, message.language) == (
        wamid,
        "template",
        TEMPLATE,
        "id",
    )
    assert message.parameters == ["Jadwal", "Buka 08.00"]
    assert message.text == "Pengumuman: Jadwal\n\nBuka 08.00"
    assert (message.biz_opaque_callback_data, message.business_initiated) == ("42", True)
    assert (fake.accepted, fake.rate_limit_errors, fake.max_per_second, fake.tier_used()) == (1, 0, 1, 1)


def test_bearer_token_and_phone_number_id_are_checked(fake: FakeWhatsApp) -> None:
    assert code(send(fake, template(), token="wrong")) == (401, 190)
    assert code(httpx.post(fake.messages_url, json=template())) == (401, 190)
    other = fake.messages_url.replace(fake.phone_number_id, "100000000000009")
    response = httpx.post(other, json=template(), headers={"Authorization": f"Bearer {fake.token}"})
    assert code(response) == (400, 100)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "error_data", "fbtrace_id"}
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert fake.messages() == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (template(name="tidak_ada"), (404, 132001)),
        (template(language="jv"), (404, 132001)),
        (template(params=("satu",)), (400, 132000)),
        (template(params=("a", "b", "c")), (400, 132000)),
        (template(params=("Jadwal", "baris\nbaru")), (400, 132018)),
        (template(params=("Jadwal", "tab\there")), (400, 132018)),
        (template(params=("Jadwal", "lima     spasi")), (400, 132018)),
        (template(params=("Jadwal", "x" * 1100)), (400, 132005)),
        (template(params=("Jadwal", "")), (400, 131008)),
        ({"to": "+6281234567890", "type": "text", "text": {"body": "x"}}, (400, 100)),
        ({"to": CITIZEN, "type": "sticker"}, (400, 100)),
        ({"to": CITIZEN, "type": "text"}, (400, 131008)),
    ],
)
def test_invalid_sends_get_metas_error_codes(fake: FakeWhatsApp, body: dict[str, Any], expected: Any) -> None:
    fake.user_writes(CITIZEN, "halo")  # the window is open, so only the body decides
    assert code(send(fake, body)) == expected
    assert fake.messages() == []
    assert [c for _, c in fake.errors] == [expected[1]]


def test_four_consecutive_spaces_are_allowed_and_english_is_its_own_template(fake: FakeWhatsApp) -> None:
    assert send(fake, template(params=("Jadwal", "empat    spasi"), language="en")).status_code == 200
    assert fake.messages()[0].text == "Notice: Jadwal\n\nempat    spasi"


def test_unapproved_template_is_refused(fake: FakeWhatsApp) -> None:
    fake.add_template("draf", "id", "Isi {{1}}", status="PENDING")
    assert code(send(fake, template(name="draf", params=("x",)))) == (404, 132001)


def test_free_text_and_buttons_need_the_customer_service_window(fake: FakeWhatsApp) -> None:
    assert code(send(fake, text())) == (400, 131047)
    assert code(send(fake, buttons())) == (400, 131047)
    fake.user_writes(CITIZEN, "JAM", ago=fake.service_window + 1)  # wrote, but more than 24 h ago
    assert code(send(fake, text())) == (400, 131047)
    fake.user_writes(CITIZEN, "JAM")
    assert send(fake, text(body="Buka 08.00")).status_code == 200
    [message] = fake.messages(CITIZEN)
    assert (message.type, message.text, message.business_initiated) == ("text", "Buka 08.00", False)
    assert fake.tier_used() == 0  # replies inside the window do not count toward the messaging limit
    fake.user_writes("6281300000001", "halo")
    fake.close_window("6281300000001")
    assert code(send(fake, text("6281300000001"))) == (400, 131047)


def test_interactive_messages_follow_metas_limits(fake: FakeWhatsApp) -> None:
    numbers = [f"62812000000{i:02d}" for i in range(6)]
    for number in numbers:
        fake.user_writes(number, "halo")
    assert code(send(fake, buttons(numbers[0], ("a", "b", "c", "d")))) == (400, 131009)
    assert code(send(fake, buttons(numbers[1], ("x" * 21,)))) == (400, 131009)
    assert code(send(fake, buttons(numbers[2], ("Ya", "Ya")))) == (400, 131009)
    assert send(fake, buttons(numbers[3], ("Ya", "x" * 20))).status_code == 200
    rows = [{"id": f"kantor-{i}", "title": f"Kantor {i}"} for i in range(10)]
    listing = {
        "type": "list",
        "body": {"text": "Pilih kantor"},
        "action": {"button": "Kantor", "sections": []},
    }
    listing["action"]["sections"] = [{"title": "Kantor", "rows": rows}]
    assert send(fake, {"to": numbers[4], "type": "interactive", "interactive": listing}).status_code == 200
    listing["action"]["sections"] = [{"title": "Kantor", "rows": [*rows, {"id": "x", "title": "X"}]}]
    assert code(send(fake, {"to": numbers[5], "type": "interactive", "interactive": listing})) == (
        400,
        131009,
    )
    sent = fake.messages()
    assert [(m.to, m.interactive, len(m.buttons)) for m in sent] == [
        (numbers[3], "button", 2),
        (numbers[4], "list", 10),
    ]


def test_throughput_is_a_sliding_second() -> None:
    clock = Clock()
    with FakeWhatsApp(throughput=5, pair_seconds=0, clock=clock) as fake:
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        answers = []
        for i in range(6):
            answers.append(send(fake, template(f"6281300000{i:03d}")))
            clock.advance(0.1)
        assert [a.status_code for a in answers] == [200] * 5 + [400]
        assert answers[5].json()["error"]["code"] == 130429
        assert (fake.accepted, fake.rate_limit_errors, fake.max_per_second) == (5, 1, 5)
        clock.advance(0.4)  # 1.0 s after the first send: it has left the window
        assert send(fake, template("6281300000999")).status_code == 200
        assert code(send(fake, template("6281300000998"))) == (400, 130429)
        assert fake.max_per_second == 5


def test_inbound_messages_count_toward_throughput() -> None:
    with FakeWhatsApp(throughput=2) as fake:
        fake.user_writes(CITIZEN, "halo")
        fake.user_writes("6281300000001", "halo")
        assert code(send(fake, text())) == (400, 130429)


def test_pair_rate_limits_messages_to_one_recipient() -> None:
    clock = Clock()
    with FakeWhatsApp(clock=clock) as fake:
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        assert send(fake, template()).status_code == 200
        clock.advance(5.9)
        assert code(send(fake, template())) == (400, 131056)
        assert send(fake, template("6281300000001")).status_code == 200  # another recipient is free
        clock.advance(0.1)  # 6 s after the first
        assert send(fake, template()).status_code == 200
        assert fake.rate_limit_errors == 1
    with FakeWhatsApp(pair_burst=3, clock=clock) as fake:
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        assert [send(fake, template()).status_code for _ in range(4)] == [200, 200, 200, 400]
        clock.advance(6)  # the burst was borrowed: one more per 6 s from here
        assert [send(fake, template()).status_code for _ in range(2)] == [200, 400]


def test_messaging_limit_counts_unique_business_initiated_recipients() -> None:
    clock = Clock()
    with FakeWhatsApp(messaging_limit=2, messaging_limit_window=60, pair_seconds=0, clock=clock) as fake:
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        a, b, c, d = (f"628140000000{i}" for i in range(4))
        assert send(fake, template(a)).status_code == 200
        clock.advance(30)
        assert send(fake, template(b)).status_code == 200
        assert code(send(fake, template(c))) == (400, TIER_CODE)
        assert send(fake, template(a)).status_code == 200  # already counted in this window
        fake.user_writes(d, "halo")
        assert send(fake, template(d)).status_code == 200  # inside d's service window: not counted
        assert (fake.tier_used(), fake.rate_limit_errors) == (2, 1)
        clock.advance(30)  # a's first send left the window, but a was sent again at 30 s
        assert code(send(fake, template(c))) == (400, TIER_CODE)
        clock.advance(30)
        assert send(fake, template(c)).status_code == 200
    with FakeWhatsApp(messaging_limit=0, pair_seconds=0, throughput=1000) as fake:
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        with httpx.Client(headers={"Authorization": f"Bearer {fake.token}"}) as client:
            bodies = [{"messaging_product": "whatsapp", **template(f"62815000{i:05d}")} for i in range(300)]
            assert {client.post(fake.messages_url, json=body).status_code for body in bodies} == {200}
        assert fake.tier_used() == 300


def test_non_whatsapp_numbers_are_undeliverable(fake: FakeWhatsApp, receiver: Receiver) -> None:
    fake.add_non_user("+6281999999999")
    assert code(send(fake, template("6281999999999"))) == (400, 131026)
    fake.async_codes = {131026}
    response = send(fake, template("6281999999999", biz_opaque_callback_data="7"))
    assert response.status_code == 200
    fake.wait_webhooks()
    [failed] = receiver.statuses()
    assert failed["id"] == response.json()["messages"][0]["id"]
    assert (failed["status"], failed["recipient_id"], failed["biz_opaque_callback_data"]) == (
        "failed", "6281999999999", "7",
    )  # fmt: skip
    assert failed["errors"][0]["code"] == 131026
    assert fake.tier_used() == 0


def test_status_webhooks_are_signed_and_carry_the_callback_data(
    fake: FakeWhatsApp, receiver: Receiver
) -> None:
    wamid = send(fake, template(biz_opaque_callback_data="1234")).json()["messages"][0]["id"]
    fake.wait_webhooks()
    for headers, raw in receiver.posts:
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["x-hub-signature-256"] == expected
        payload = json.loads(raw)
        assert payload["object"] == "whatsapp_business_account"
        change = payload["entry"][0]["changes"][0]
        assert change["field"] == "messages"
        assert change["value"]["metadata"] == {
            "display_phone_number": fake.display_phone_number,
            "phone_number_id": fake.phone_number_id,
        }
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert {(s["id"], s["recipient_id"], s["biz_opaque_callback_data"]) for s in statuses} == {
        (wamid, CITIZEN, "1234")
    }
    assert [d[2] for d in fake.webhook_deliveries] == [200, 200, 200]


def test_status_order_can_be_shuffled(fake: FakeWhatsApp, receiver: Receiver) -> None:
    random.seed(13)
    fake.shuffle_statuses = True
    fake.statuses = ("delivered", "read")
    for i in range(12):
        send(fake, template(f"62816000000{i:02d}", biz_opaque_callback_data=str(i)))
    fake.wait_webhooks()
    orders: dict[str, list[str]] = {}
    for status in receiver.statuses():
        orders.setdefault(status["biz_opaque_callback_data"], []).append(status["status"])
    assert sorted(orders) == sorted(str(i) for i in range(12))
    assert all(sorted(order) == ["delivered", "read"] for order in orders.values())
    assert ["read", "delivered"] in orders.values()


def test_status_delay_spaces_a_messages_webhooks(fake: FakeWhatsApp, receiver: Receiver) -> None:
    fake.status_delay = 0.15
    sent_at = time.monotonic()
    send(fake, template())
    fake.wait_webhooks()
    assert [s["status"] for s in receiver.statuses()] == ["sent", "delivered", "read"]
    gaps = [b - a for a, b in zip([sent_at, *receiver.arrivals], receiver.arrivals, strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.15


def test_webhooks_are_retried_until_the_hub_answers_200(fake: FakeWhatsApp, receiver: Receiver) -> None:
    receiver.answers = [500]
    fake.statuses = ("delivered",)
    wamid = send(fake, template()).json()["messages"][0]["id"]
    fake.wait_webhooks()
    assert fake.webhook_deliveries == [("status:delivered", wamid, 500), ("status:delivered", wamid, 200)]


def test_user_messages_post_signed_inbound_webhooks(fake: FakeWhatsApp, receiver: Receiver) -> None:
    first = fake.user_writes("+" + CITIZEN, "DAFTAR", name="Siti")
    second = fake.user_presses(CITIZEN, "topik-3", "Kesehatan", context="wamid.abc")
    fake.wait_webhooks()
    # Two messages are two deliveries, which may arrive in either order (as Meta's may).
    values = sorted(receiver.values(), key=lambda v: v["messages"][0]["type"], reverse=True)
    names = [v["contacts"][0]["profile"]["name"] for v in values]
    assert (names, {v["contacts"][0]["wa_id"] for v in values}) == (["Siti", "Warga"], {CITIZEN})
    text_message, reply = (v["messages"][0] for v in values)
    assert (text_message["id"], text_message["from"], text_message["type"]) == (first, CITIZEN, "text")
    assert text_message["text"] == {"body": "DAFTAR"}
    assert reply["id"] == second
    assert reply["interactive"] == {
        "type": "button_reply",
        "button_reply": {"id": "topik-3", "title": "Kesehatan"},
    }
    assert reply["context"] == {"from": fake.display_phone_number, "id": "wamid.abc"}
    for headers, raw in receiver.posts:
        assert hmac.compare_digest(
            headers["x-hub-signature-256"],
            "sha256=" + hmac.new(APP_SECRET.encode(), raw, "sha256").hexdigest(),
        )


def test_forced_errors_mark_read_and_no_webhooks_without_a_secret(receiver: Receiver) -> None:
    with FakeWhatsApp(webhook_url=receiver.url) as fake:  # no app secret: Meta would not be configured
        fake.add_template(TEMPLATE, "id", "{{1}} {{2}}")
        fake.fail_next(131000, to=CITIZEN, retry_after=7)
        response = send(fake, template())
        assert code(response) == (500, 131000)
        assert response.headers["Retry-After"] == "7"
        assert send(fake, template()).status_code == 200
        fake.fail_next(80007)
        assert code(send(fake, template("6281300000001"))) == (400, 80007)
        assert fake.rate_limit_errors == 1
        wamid = fake.user_writes(CITIZEN, "halo")
        marks = [
            httpx.post(
                fake.messages_url,
                json={"messaging_product": "whatsapp", "status": "read", "message_id": message_id},
                headers={"Authorization": f"Bearer {fake.token}"},
            )
            for message_id in (wamid, "wamid.unknown")
        ]
        assert (marks[0].status_code, marks[0].json(), fake.marked_read) == (200, {"success": True}, [wamid])
        assert code(marks[1]) == (400, 131009)
        fake.wait_webhooks()
        assert receiver.posts == []
        assert {n: len(m) for n, m in fake.by_recipient().items()} == {CITIZEN: 1}
