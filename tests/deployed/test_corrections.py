"""A correction, as staff send it and citizens receive it by email (defect 5)."""

from __future__ import annotations

import json

from tests.deployed.conftest import Deployment


def test_correction_reaches_only_recipients_still_subscribed_and_says_it_is_one(
    deployment: Deployment,
) -> None:
    people = deployment.workdir / "people.csv"
    people.write_text(
        "email,locale\nsiti@example.com,id\njohn@example.com,en\nleft@example.com,id\n", encoding="utf-8"
    )
    deployment.cli("subscribers", "import", str(people), "--topic", "kota-pekalongan", "--confirmed")
    data = deployment.workdir / "data.json"
    title = {"id": "Jam layanan", "en": "Service hours"}
    data.write_text(json.dumps({"title": title, "text": {"id": "Buka 08.00.", "en": "Open 8:00."}}))
    shown = json.loads(
        deployment.cli(
            "announce", "--topic", "kota-pekalongan", "--template", "free_text", "--data", str(data), "--json"
        ).stdout
    )
    key = deployment.cli("keys", "create", "--office", "kota-pekalongan", "--role", "staff").stdout.strip()
    hub = deployment.start_run()
    mailbox = deployment.mailbox
    deployment.wait_for(lambda: len(mailbox.messages) == 3, 60, "the original's three emails", hub)
    original = {m["To"]: m["Subject"] for m in mailbox.messages}
    assert original["siti@example.com"] == "Dindukcapil Kota Pekalongan: Jam layanan"

    # One citizen leaves (the one-click link of the original); another subscribes after the original.
    [theirs] = mailbox.to("left@example.com")
    link = theirs["List-Unsubscribe"].strip().strip("<>").removeprefix(deployment.url)
    assert deployment.api.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    newcomer = deployment.workdir / "newcomer.csv"
    newcomer.write_text("email\nnew@example.com\n", encoding="utf-8")
    deployment.cli("subscribers", "import", str(newcomer), "--topic", "kota-pekalongan", "--confirmed")
    mailbox.messages.clear()

    answer = deployment.api.post(
        f"/v1/announcements/{shown['id']}/corrections",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "template": "free_text",
            "data": {"title": title, "text": {"id": "Buka 09.00.", "en": "Open 9:00."}},
        },
    )
    assert answer.status_code == 201, answer.text
    message_id = answer.json()["message_id"]

    def finished() -> bool:
        status = json.loads(deployment.cli("status", str(message_id), "--json").stdout)
        return bool(status["done"])

    deployment.wait_for(finished, 60, "the correction to be sent", hub)
    assert sorted((m["To"], m["Subject"]) for m in mailbox.messages) == [
        ("john@example.com", "Correction: Dindukcapil Kota Pekalongan: Service hours"),
        ("siti@example.com", "Ralat: Dindukcapil Kota Pekalongan: Jam layanan"),
    ]
