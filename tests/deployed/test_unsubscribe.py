"""One-click unsubscribe, as a citizen uses it: the link in a region-wide broadcast's email (defect 6)."""

from __future__ import annotations

import json
import sqlite3

from tests.deployed.conftest import Deployment


def _subscriptions(deployment: Deployment, address: str) -> dict[str, str]:
    """What the citizen follows, by topic slug (read from the database, as staff would see it)."""
    with sqlite3.connect(deployment.workdir / "hub.db") as db:
        rows = db.execute(
            "SELECT t.slug, s.state FROM subscriptions s JOIN topics t ON t.id = s.topic_id "
            "JOIN endpoints e ON e.id = s.endpoint_id WHERE e.address = ?",
            (address,),
        ).fetchall()
    return dict(rows)


def test_one_click_from_a_province_broadcast_leaves_only_the_topic_it_came_through(
    deployment: Deployment,
) -> None:
    citizen = "warga@example.com"
    people = deployment.workdir / "people.csv"
    people.write_text(f"email\n{citizen}\n", encoding="utf-8")
    for topic in ("kota-serang", "kota-serang/akta"):
        deployment.cli("subscribers", "import", str(people), "--topic", topic, "--confirmed")
    data = deployment.workdir / "data.json"
    data.write_text(
        json.dumps({"title": "Layanan daring", "text": "Semua layanan melalui aplikasi."}), encoding="utf-8"
    )
    # The province speaks to every office below it: the citizen is reached through their own office.
    deployment.cli("announce", "--region", "36", "--template", "free_text", "--data", str(data))
    hub = deployment.start_run()
    deployment.wait_for(lambda: deployment.mailbox.to(citizen), 60, "the broadcast's email", hub)
    [mail] = deployment.mailbox.to(citizen)
    link = mail["List-Unsubscribe"].strip().strip("<>")
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    footer = text.rpartition("\n--\n")[2].strip()
    assert footer == (
        "Anda menerima pesan ini karena berlangganan informasi Disdukcapil Kota Serang.\n"
        f"Berhenti berlangganan: {link}"
    )

    answer = deployment.api.post(link.removeprefix(deployment.url), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert _subscriptions(deployment, citizen) == {
        "kota-serang": "unsubscribed",
        "kota-serang/akta": "confirmed",
    }
