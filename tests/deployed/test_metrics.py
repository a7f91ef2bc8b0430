"""Metrics and readiness of a running deployment (issue 12): `hub run` and a `hub worker` as operators run
them, scraped as Prometheus scrapes them, probed as a load balancer probes them.

One deployment serves every assertion (the suite's time is at its bar): a broadcast moves the delivery
counters of the processes that sent it; then the database's schema falls behind and Redis stops, and
``/readyz`` names each in turn while ``/healthz`` (liveness) stays 200.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.deployed.conftest import Deployment
from tests.deployed.test_operations import _redis_server

RECIPIENTS = 12


def _samples(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of a /metrics page: ``{name: {sorted labels: value}}``."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _total(pages: list[dict], name: str, **labels: str) -> float:
    """A counter summed over processes and over the labels not given, as a PromQL ``sum`` would."""
    return sum(
        value
        for page in pages
        for key, value in page.get(name, {}).items()
        if all((k, v) in key for k, v in labels.items())
    )


def test_counters_move_with_a_broadcast_and_readyz_names_what_is_down(deployment: Deployment) -> None:
    redis_port, worker_port = free_port(), free_port()
    redis_proc: subprocess.Popen[bytes] = _redis_server(redis_port)
    try:
        deployment.configure(
            redis={"url": f"redis://127.0.0.1:{redis_port}/0", "embedded_fallback": False},
            metrics={"worker_port": worker_port, "state_ttl_seconds": 0},
        )
        people = deployment.workdir / "people.csv"
        people.write_text("email\n" + "".join(f"warga{i}@example.com\n" for i in range(RECIPIENTS)))
        deployment.cli("subscribers", "import", str(people), "--topic", "kota-pekalongan", "--confirmed")
        run = deployment.start_run()
        worker = deployment.start_worker()
        deployment.wait_for(lambda: "metrics on http" in deployment.log(worker), 30, "the worker", worker)
        assert deployment.api.get("/readyz").json() == {"database": "ok", "redis": "ok", "migrations": "ok"}

        hours = deployment.workdir / "hours.json"
        hours.write_text(json.dumps({"hours": {"monday": "08:00-11:00"}, "daily_quota": 50}))
        deployment.cli(
            "announce", "--topic", "kota-pekalongan", "--template", "hours_changed", "--data", str(hours)
        )
        urls = [f"{deployment.url}/metrics", f"http://127.0.0.1:{worker_port}/metrics"]

        def all_sent() -> list[dict] | None:
            pages = [_samples(url) for url in urls]
            sent = _total(pages, "hub_deliveries_total", channel="email", lane="bulk", outcome="sent")
            return pages if sent == RECIPIENTS else None

        pages = deployment.wait_for(all_sent, 60, f"{RECIPIENTS} sent deliveries counted", run)
        assert len(deployment.mailbox.messages) == RECIPIENTS
        assert _total(pages, "hub_send_seconds_count", channel="email") == RECIPIENTS
        assert _total(pages, "hub_deliveries_total", outcome="failed") == 0
        api = pages[0]
        # The deployment's own figures come from the API: nothing is due once the broadcast is out.
        assert {key: value for key, value in api["hub_oldest_due_delivery_age_seconds"].items()} == {
            (("lane", "urgent"),): 0.0,
            (("lane", "bulk"),): 0.0,
        }
        assert set(api["hub_queue_depth"]) == {(("lane", "urgent"),), (("lane", "bulk"),)}

        # The schema falls behind this release (as after installing a newer hub without migrating).
        database = deployment.workdir / "hub.db"
        with sqlite3.connect(database) as db:
            head = db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            db.execute("UPDATE alembic_version SET version_num = '0010'")
        behind = deployment.api.get("/readyz")
        assert behind.status_code == 503 and behind.headers["Retry-After"]
        assert behind.json()["migrations"] == "down" and "run `hub init`" in behind.json()["error"]
        with sqlite3.connect(database) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (head,))

        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        down = deployment.api.get("/readyz")
        assert down.status_code == 503
        assert (down.json()["database"], down.json()["redis"], down.json()["migrations"]) == (
            "ok",
            "down",
            "ok",
        )
        assert "redis" in down.json()["error"]
        assert deployment.api.get("/healthz").status_code == 200  # alive: nothing to restart

        # With Redis gone nothing is sent: a delivery put back to queued, due two minutes ago, is the
        # oldest due delivery of its lane, as the alert reads it (and still scraped while Redis is down).
        stuck = (datetime.now(UTC) - timedelta(minutes=2)).replace(tzinfo=None).isoformat(sep=" ")
        with sqlite3.connect(database) as db:
            db.execute(
                "UPDATE deliveries SET state = 'queued', next_attempt_at = ? "
                "WHERE id = (SELECT min(id) FROM deliveries)",
                (stuck,),
            )
        oldest = _samples(f"{deployment.url}/metrics")["hub_oldest_due_delivery_age_seconds"]
        assert 120 <= oldest[(("lane", "bulk"),)] < 180 and oldest[(("lane", "urgent"),)] == 0
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
