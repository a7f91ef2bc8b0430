"""A scheduled announcement goes out at its time, as an operator schedules it (defect 9)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from tests.deployed.conftest import Deployment


def _times(deployment: Deployment) -> tuple[datetime, datetime] | None:
    """The message's send time and its one email's sent time (naive UTC, as stored), once sent."""
    with sqlite3.connect(deployment.workdir / "hub.db") as db:
        row = db.execute(
            "SELECT m.send_at, d.sent_at FROM deliveries d JOIN messages m ON m.id = d.message_id "
            "WHERE d.sent_at IS NOT NULL"
        ).fetchone()
    return (datetime.fromisoformat(row[0]), datetime.fromisoformat(row[1])) if row else None


def test_scheduled_announcement_starts_on_time_whatever_the_reconcile_interval(
    deployment: Deployment,
) -> None:
    deployment.configure(queue={"reconcile_every_seconds": 60})
    people = deployment.workdir / "people.csv"
    people.write_text("email\nwarga@example.com\n", encoding="utf-8")
    deployment.cli("subscribers", "import", str(people), "--topic", "kota-serang", "--confirmed")
    data = deployment.workdir / "data.json"
    data.write_text(json.dumps({"title": "Libur", "text": "Kantor tutup besok."}), encoding="utf-8")
    worker = deployment.start_worker()
    # Room for the CLI's start on a loaded machine (a full suite beside a soak took over 6 s).
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
    if not 5 <= at.second <= 55:
        # The reconciler runs at second 0 of each minute here: keep clear of it, so only the plan job
        # queued for the send time can start the message on time.
        at += timedelta(seconds=10)
    deployment.cli(
        "announce", "--topic", "kota-serang", "--data", str(data), "--at", at.isoformat(timespec="seconds")
    )
    assert datetime.now(UTC) < at, "the CLI took too long: the test cannot tell on time from late"
    deployment.wait_for(lambda: deployment.mailbox.messages, 75, "the scheduled email", worker)
    times = deployment.wait_for(lambda: _times(deployment), 10, "the send to be recorded", worker)
    send_at, sent_at = times
    assert send_at == at.replace(tzinfo=None)
    assert 0 <= (sent_at - send_at).total_seconds() <= 1.5, f"sent {sent_at - send_at} after its time"
