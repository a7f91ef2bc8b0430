"""The README's first steps, as an office's operator takes them: CLI, `hub run`, `hub worker`, mail out."""

from __future__ import annotations

import json

from tests.deployed.conftest import Deployment


def test_broadcast_by_cli_reaches_every_confirmed_subscriber_once(deployment: Deployment) -> None:
    people = deployment.workdir / "people.csv"
    people.write_text("email\n" + "".join(f"warga{i}@example.com\n" for i in range(5)), encoding="utf-8")
    deployment.cli("subscribers", "import", str(people), "--topic", "kota-pekalongan", "--confirmed")
    hours = deployment.workdir / "hours.json"
    hours.write_text(
        json.dumps({"hours": {"monday": "08:00-11:00", "friday": "08:00-10:00"}, "daily_quota": 50}),
        encoding="utf-8",
    )
    deployment.cli(
        "announce", "--topic", "kota-pekalongan", "--template", "hours_changed", "--data", str(hours)
    )
    worker = deployment.start_worker()
    deployment.wait_for(lambda: len(deployment.mailbox.messages) >= 5, 60, "five emails", worker)
    recipients = sorted(m["To"] for m in deployment.mailbox.messages)
    assert recipients == [f"warga{i}@example.com" for i in range(5)]


def test_hub_run_serves_the_api_and_its_docs(deployment: Deployment) -> None:
    deployment.start_run()
    assert deployment.api.get("/healthz").status_code == 200
    assert deployment.api.get("/openapi.json").json()["info"]["title"]
