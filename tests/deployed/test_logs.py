"""What a stolen log reveals (issue 9, hole 4): nothing of a citizen and no secret, even at DEBUG.

A `hub run` and a `hub worker` at ``log.level = "DEBUG"``, with email (the SMTP sink), Telegram (the fake
Bot API) and SMS (a Kannel gateway that does not answer, so sends fail with tracebacks), serve what
citizens and intake systems do: an email subscription and its confirmation link, a case opened with a
phone number and an email address, the citizen tracking it by SMS and by Telegram with the PIN, an
update sent to them, delivery reports. The webhook calls carry the gateway's secret, the phone number
and the PIN in their query strings, as Kannel sends them. Every line both processes wrote is searched
for each of those values: none is there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import urlencode

from tests.conftest import free_port
from tests.deployed.conftest import Deployment
from tests.fakes.telegram_api import FakeTelegram
from tests.integration.telegram.conftest import WEBHOOK_SECRET, telegram_conf

CITIZEN_CHAT = 6_100_042
PHONE, PHONE_TYPED = "+6281298765432", "0812-9876-5432"
EMAIL, APPLICANT_EMAIL = "warga.rahasia@example.com", "pemohon.rahasia@example.com"
MO_SECRET, DLR_SECRET, KANNEL_PASSWORD = "mo-secret-5c1d7e", "dlr-secret-9a4b2f", "kannel-pass-3e8f"
SMS = {
    "enabled": True,
    "sender": "DUKCAPIL",
    "dlr_secret": DLR_SECRET,
    "mo_secret": MO_SECRET,
    "gateways": [{"driver": "kannel", "name": "kannel", "username": "hub", "password": KANNEL_PASSWORD,
                  "url": f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms"}],
}  # fmt: skip
REFERENCE = "KTP-2031-0042"


def test_no_address_pin_token_or_secret_reaches_the_logs_at_debug(
    make_deployment: Callable[..., Deployment], fake: FakeTelegram
) -> None:
    d = make_deployment(channels={"telegram": telegram_conf(fake), "sms": SMS}, log={"level": "DEBUG"})
    intake = d.cli("keys", "create", "--office", "kota-pekalongan", "--role", "intake").stdout.strip()
    staff = d.cli("keys", "create", "--office", "kota-pekalongan", "--role", "staff").stdout.strip()
    procs = [d.start_run(), d.start_worker()]
    fake.add_private(CITIZEN_CHAT, first_name="Citra")

    # A citizen subscribes by email and follows the confirmation link.
    subscribed = d.api.post("/v1/subscriptions/email", json={"topic": "kota-pekalongan", "email": EMAIL})
    assert subscribed.status_code == 202, subscribed.text
    d.wait_for(lambda: d.mailbox.to(EMAIL), 30, "the confirmation email", procs[0])
    body = d.mailbox.to(EMAIL)[0].get_body(("plain",)).get_content()
    confirm = re.search(r"/v1/confirm/[^\s?]+", body)
    assert confirm, body
    assert d.api.get(confirm.group(0) + "?utm=" + EMAIL).status_code == 200

    # An intake system opens a case: the receipt's PIN and deep-link code.
    contacts = [{"channel": "sms", "address": PHONE_TYPED}, {"channel": "email", "address": APPLICANT_EMAIL}]
    opened = d.api.post(
        "/v1/applicants",
        headers={"Authorization": f"Bearer {intake}"},
        json={"reference": REFERENCE, "document": "KTP", "contacts": contacts},
    )
    assert opened.status_code == 201, opened.text
    pin, link_code = opened.json()["pin"], opened.json()["link_code"]

    # The citizen tracks it by SMS (Kannel's get-url: secret, number and PIN in the query string) ...
    mo = {"kind": "mo", "k": MO_SECRET, "from": PHONE, "text": f"LACAK {REFERENCE} {pin}"}
    assert d.api.get(f"/v1/channels/sms/webhook?{urlencode(mo)}").status_code == 200
    wrong = {**mo, "k": "not-the-secret", "text": f"LACAK {REFERENCE} {pin}"}
    assert d.api.get(f"/v1/channels/sms/webhook?{urlencode(wrong)}").status_code == 403
    dlr = {"kind": "dlr", "d": "1", "t": DLR_SECRET, "s": "1", "to": PHONE}
    assert d.api.get(f"/v1/channels/sms/webhook?{urlencode(dlr)}").status_code == 403
    # ... and by Telegram, then links the chat with the receipt's code.
    fake.inject_message(CITIZEN_CHAT, f"/lacak {REFERENCE} {pin}")
    fake.inject_message(CITIZEN_CHAT, f"/start {link_code}")
    d.wait_for(lambda: len(fake.messages(CITIZEN_CHAT)) >= 2, 30, "the bot's answers", procs[0])

    # Staff look at subscribers with a query string; the office posts an update, sent to every contact.
    listed = d.api.get(f"/v1/subscribers?{urlencode({'address': PHONE, 'q': EMAIL})}",
                       headers={"Authorization": f"Bearer {staff}"})  # fmt: skip
    assert listed.status_code == 200, listed.text
    update = d.api.post(
        f"/v1/applicants/{REFERENCE}/updates",
        headers={"Authorization": f"Bearer {intake}"},
        json={"status": "ready", "pickup_place": "loket 2"},
    )
    assert update.status_code == 202, update.text
    d.wait_for(lambda: d.mailbox.to(APPLICANT_EMAIL), 30, "the update's email", procs[0])
    time.sleep(1.0)  # the SMS sends to the silent gateway fail and are logged meanwhile
    for proc in procs:
        d.stop(proc)

    logs = {f"{proc.args[5]} ({proc.pid})": d.log(proc) for proc in procs}  # type: ignore[index]
    secrets = {
        "phone number": PHONE, "phone number as typed": PHONE_TYPED, "national number": PHONE[3:],
        "email address": EMAIL, "applicant's email address": APPLICANT_EMAIL,
        "Telegram chat id": str(CITIZEN_CHAT), "deep-link code": link_code,
        "confirmation link token": confirm.group(0).rpartition("/")[2],
        "SMS gateway secret": MO_SECRET, "delivery-report secret": DLR_SECRET,
        "Kannel password": KANNEL_PASSWORD, "bot token": fake.token, "bot token secret": fake.token[10:],
        "Telegram webhook secret": WEBHOOK_SECRET, "intake key": intake, "staff key": staff,
        "hub secret key": d.settings.hub.secret_key,
    }  # fmt: skip
    patterns = {
        # A PIN is six digits: looked for as a number on its own, not inside a timestamp's microseconds.
        "PIN": rf"(?<![\d.]){pin}(?!\d)",
        # A mask keeps at most the country code and the last three digits: +62*******432.
        "phone digits beyond the mask": r"\+62\d|\*\d{4}",
    }
    found = [(what, name) for name, text in logs.items() for what, value in secrets.items() if value in text]
    found += [
        (what, name) for name, text in logs.items() for what, rx in patterns.items() if re.search(rx, text)
    ]
    shown = "\n\n".join(f"--- {name}\n{text}" for name, text in logs.items())
    assert found == [], f"in the logs: {found}\n\n{shown}"
    # What an operator needs is still there: each request, by path.
    assert '"GET /v1/channels/sms/webhook HTTP/1.1" 200' in logs[next(iter(logs))]
