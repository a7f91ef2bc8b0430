"""WhatsApp as deployed: `hub run` and `hub worker` from a settings file, Meta's webhooks through the HTTP
server, sends into the loopback Cloud API (tests/fakes/whatsapp_cloud.py).

Meta cannot be reached from tests, so the processes talk to the fake, which signs its webhooks with the
app secret and POSTs them to the running `hub run`, as Meta does to a registered callback URL. Citizens
opt in by writing to the office's number; staff publish with the CLI; the test reads what the citizens
received in the fake (compared whole with tests/golden/whatsapp/), what `hub status` says, and the
subscriptions in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.deployed.conftest import Deployment
from tests.deployed.test_sending import announce, status
from tests.fakes.whatsapp_cloud import FakeWhatsApp
from tests.unit.test_golden import check_golden

GOLDEN = ROOT / "tests" / "golden" / "whatsapp"
WEBHOOK = "/v1/channels/whatsapp/webhook"
APP_SECRET = "deployed-app-secret-4f1c"
VERIFY_TOKEN = "deployed-verify-token-9a2e"
TOPIC = "kota-pekalongan"
TEMPLATES = {
    "announcement": ("pengumuman_dukcapil", "Pengumuman Disdukcapil:\n\n{{1}}"),
    "correction": ("ralat_pengumuman", "Ralat pengumuman:\n\n{{1}}"),
    "applicant": ("kabar_permohonan", "Kabar permohonan Anda:\n\n{{1}}"),
}
CITIZENS = [f"+62812880{n:05d}" for n in range(20)]
SUBSCRIBED = "Anda berlangganan: Dindukcapil Kota Pekalongan. Kirim berhenti untuk berhenti."


@pytest.fixture
def cloud() -> Iterator[FakeWhatsApp]:
    """The Cloud API for one business number on a free port of 127.0.0.1, with the office's templates."""
    fake = FakeWhatsApp(app_secret=APP_SECRET).start()
    try:
        for name, body in TEMPLATES.values():
            for language in ("id", "en"):
                fake.add_template(name, language, body)
        yield fake
    finally:
        fake.stop()


def with_whatsapp(make_deployment: Callable[..., Deployment], fake: FakeWhatsApp) -> Deployment:
    """A deployment whose settings file enables WhatsApp; the fake's callback URL is its `hub run`."""
    conf = {
        "enabled": True,
        "token": fake.token,
        "phone_number_id": fake.phone_number_id,
        "base_url": fake.base_url,
        "api_version": fake.api_version,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "messaging_limit": 250,
        "templates": {
            kind: {"name": name, "parameters": ["text"], "languages": {"id": "id", "en": "en"}}
            for kind, (name, _) in TEMPLATES.items()
        },
    }
    d = make_deployment(channels={"whatsapp": conf})
    fake.webhook_url = f"{d.url}{WEBHOOK}"
    return d


def states(d: Deployment) -> dict[str, str]:
    """The WhatsApp subscriptions to the topic, by number (the test's only look behind the interfaces)."""
    db = d.settings.database.url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT e.address, s.state FROM subscriptions s JOIN endpoints e ON e.id = s.endpoint_id "
            "JOIN topics t ON t.id = s.topic_id WHERE e.channel = 'whatsapp' AND t.slug = ?",
            (TOPIC,),
        ).fetchall()
    return dict(rows)


def document(payload: dict[str, Any]) -> str:
    """A send's request body for a golden file, without what differs per recipient and run."""
    body = {**payload, "to": "<to>"}
    if "biz_opaque_callback_data" in body:
        body["biz_opaque_callback_data"] = "<delivery id>"
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def test_webhook_handshake_and_signatures_through_the_http_server(
    make_deployment: Callable[..., Deployment], cloud: FakeWhatsApp
) -> None:
    d = with_whatsapp(make_deployment, cloud)
    d.start_run()
    url = f"{d.url}{WEBHOOK}"
    # Registering the callback URL in the app dashboard: Meta GETs it and expects the challenge back.
    asked = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    answer = httpx.get(url, params=asked, timeout=10)
    assert (answer.status_code, answer.text) == (200, "1158201444")
    wrong = httpx.get(url, params={**asked, "hub.verify_token": "guessed"}, timeout=10)
    assert wrong.status_code == 403 and "1158201444" not in wrong.text

    # A POST that is not signed with the app secret changes nothing, whatever it says.
    forged = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": cloud.waba_id,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": cloud.display_phone_number,
                                    "phone_number_id": cloud.phone_number_id,
                                },
                                "contacts": [{"profile": {"name": "Warga"}, "wa_id": CITIZENS[0][1:]}],
                                "messages": [
                                    {
                                        "from": CITIZENS[0][1:],
                                        "id": "wamid.forged",
                                        "timestamp": "1733300000",
                                        "type": "text",
                                        "text": {"body": f"DAFTAR {TOPIC}"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    wrong_key = "sha256=" + hmac.new(b"not-the-secret", forged, hashlib.sha256).hexdigest()
    for headers in ({}, {"X-Hub-Signature-256": wrong_key}):
        refused = httpx.post(url, content=forged, headers={"Content-Type": "application/json", **headers})
        assert refused.status_code == 403, refused.text
    right = "sha256=" + hmac.new(APP_SECRET.encode(), forged, hashlib.sha256).hexdigest()
    tampered = forged.replace(b"DAFTAR", b"BERHENTI")
    refused = httpx.post(url, content=tampered, headers={"X-Hub-Signature-256": right})
    assert refused.status_code == 403
    assert states(d) == {}
    # The same body, signed: the citizen is subscribed.
    accepted = httpx.post(url, content=forged, headers={"X-Hub-Signature-256": right})
    assert accepted.status_code == 200, accepted.text
    assert states(d) == {CITIZENS[0]: "confirmed"}


def test_citizens_opt_in_and_a_broadcast_reaches_them_as_templates_then_read(
    make_deployment: Callable[..., Deployment], cloud: FakeWhatsApp
) -> None:
    d = with_whatsapp(make_deployment, cloud)
    cloud.shuffle_statuses = True
    procs = [d.start_run(), d.start_worker()]

    def alive() -> None:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a hub process exited with {proc.returncode}:\n{d.log(proc)[-3000:]}")

    # Each citizen writes to the office's number first: that message is the opt-in WhatsApp requires.
    for number in CITIZENS:
        cloud.user_writes(number, f"DAFTAR {TOPIC}")

    def answered() -> bool:
        alive()
        return len(cloud.messages()) >= len(CITIZENS)

    d.wait_for(answered, 60, "an answer to every DAFTAR")
    assert states(d) == {n: "confirmed" for n in CITIZENS}
    answers = cloud.messages()
    assert sorted(m.to for m in answers) == sorted(n[1:] for n in CITIZENS)
    assert {(m.type, m.text) for m in answers} == {("text", SUBSCRIBED)}

    shown = announce(d)  # `hub announce` by staff: hours_changed to the office's topic
    message_id = shown["message_id"]

    def all_read() -> dict[str, Any] | None:
        alive()
        now = status(d, message_id)
        return now if now["done"] and now["totals"].get("read") == len(CITIZENS) else None

    final = d.wait_for(all_read, 90, f"{len(CITIZENS)} deliveries read")
    assert final["totals"]["failed"] == 0 and final["totals"]["delivered"] == 0, final["totals"]

    broadcast = cloud.messages()[len(answers) :]
    assert Counter(m.to for m in broadcast) == Counter({n[1:]: 1 for n in CITIZENS})  # once each
    assert {(m.type, m.template, m.language) for m in broadcast} == {
        ("template", "pengumuman_dukcapil", "id")
    }
    check_golden(GOLDEN / "hours_changed_template.id.json", document(broadcast[0].payload))
    assert {document(m.payload) for m in broadcast} == {document(broadcast[0].payload)}
    assert cloud.rate_limit_errors == 0, cloud.errors
    # Every status was POSTed to `hub run` and taken (none refused as unsigned or unreadable).
    refused = [(kind, code) for kind, _, code in cloud.webhook_deliveries if code != 200]
    assert refused == []
