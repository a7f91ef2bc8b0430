"""A real Synapse homeserver for tests: SQLite, plain HTTP on 127.0.0.1, raised rate limits.

Synapse runs from its own virtualenv (``scripts/install-synapse.sh``) so its dependency pins never meet the
hub's. Use it as a session fixture::

    @pytest.fixture(scope="session")
    def synapse(tmp_path_factory):
        with run_synapse(tmp_path_factory.mktemp("synapse")) as server:
            yield server

Without the venv the tests are skipped, unless ``CI`` is set: there a missing Synapse is a failure, so a
broken CI image cannot pass by skipping everything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "localhost"
START_TIMEOUT = 60.0

# Every limit a test could trip, raised far out of reach. The rate-limit test lowers one user's message
# limit through the admin API instead, so one server serves every test.
_HIGH = {"per_second": 10000, "burst_count": 100000}
_RATE_LIMITS = {
    "rc_message": _HIGH,
    "rc_registration": _HIGH,
    "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
    "rc_joins": {"local": _HIGH, "remote": _HIGH},
    "rc_joins_per_room": _HIGH,
    "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
    "rc_room_creation": _HIGH,
    "rc_presence": {"per_user": _HIGH},
    "rc_key_requests": _HIGH,
    "rc_admin_redaction": _HIGH,
    "rc_profile": _HIGH,
    "rc_user_directory": _HIGH,
}


@dataclass(frozen=True)
class MatrixUser:
    user_id: str
    access_token: str
    device_id: str
    password: str


@dataclass
class SynapseServer:
    """A running homeserver; ``base_url`` is what clients connect to."""

    base_url: str
    directory: Path
    shared_secret: str
    process: subprocess.Popen[bytes]
    server_name: str = SERVER_NAME
    _admin: MatrixUser | None = field(default=None, repr=False)

    def register(self, name: str, admin: bool = False, password: str | None = None) -> MatrixUser:
        """Create a user through the shared-secret admin API (open registration stays off)."""
        password = password or secrets.token_urlsafe(12)
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            nonce = http.get("/_synapse/admin/v1/register").raise_for_status().json()["nonce"]
            message = "\x00".join((nonce, name, password, "admin" if admin else "notadmin"))
            mac = hmac.new(self.shared_secret.encode(), message.encode(), hashlib.sha1)
            body = {
                "nonce": nonce,
                "username": name,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            resp = http.post("/_synapse/admin/v1/register", json=body)
            if resp.status_code != 200:
                raise RuntimeError(f"registering {name!r} failed: {resp.status_code} {resp.text}")
            data = resp.json()
        return MatrixUser(data["user_id"], data["access_token"], data["device_id"], password)

    def register_many(self, prefix: str, count: int) -> list[MatrixUser]:
        """``count`` users named ``<prefix>-<n>``, registered in parallel."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda n: self.register(f"{prefix}-{n}"), range(count)))

    def register_user(self, name: str, admin: bool = False) -> tuple[str, str]:
        """``(user_id, access_token)`` of a new user."""
        user = self.register(name, admin=admin)
        return user.user_id, user.access_token

    def login(self, user: MatrixUser, device_id: str) -> str:
        """A new access token for ``user`` on a device of our choosing (fixed device ids)."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": user.password,
            "device_id": device_id,
        }
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            resp = http.post("/_matrix/client/v3/login", json=body).raise_for_status()
        return str(resp.json()["access_token"])

    @property
    def admin(self) -> MatrixUser:
        if self._admin is None:
            self._admin = self.register(f"admin-{secrets.token_hex(3)}", admin=True)
        return self._admin

    def override_ratelimit(self, user_id: str, messages_per_second: int, burst_count: int) -> None:
        """Give one user its own message limit (integers); ``0, 0`` exempts it, as a real bot should be."""
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            resp = http.post(
                f"/_synapse/admin/v1/users/{quote(user_id)}/override_ratelimit",
                json={"messages_per_second": messages_per_second, "burst_count": burst_count},
                headers={"Authorization": f"Bearer {self.admin.access_token}"},
            )
            if resp.status_code != 200:
                raise RuntimeError(f"override_ratelimit failed: {resp.status_code} {resp.text}")

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("stderr.log", "homeserver.log"):
            path = self.directory / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """Terminate, then kill: a test run must never leave a homeserver behind."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def synapse_python() -> Path | None:
    """The synapse venv's interpreter, if installed (``SYNAPSE_VENV`` or ``.cache/synapse-venv``)."""
    venv = Path(os.environ.get("SYNAPSE_VENV") or REPO_ROOT / ".cache" / "synapse-venv")
    python = venv / "bin" / "python"
    return python if python.exists() else None


def require_synapse_python() -> Path:
    """Skip locally without Synapse; fail loudly under CI, where skipping would hide a broken image."""
    python = synapse_python()
    if python is None:
        reason = "Synapse venv missing: run scripts/install-synapse.sh (or set SYNAPSE_VENV)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return python


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signing_key() -> str:
    """An ed25519 signing key in Synapse's file format: algorithm, version, unpadded base64 seed."""
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    return f"ed25519 a_{secrets.token_hex(2)} {seed}\n"


def write_config(directory: Path, port: int, shared_secret: str) -> Path:
    """A minimal homeserver.yaml (JSON is valid YAML): no federation, no outbound key fetches."""
    (directory / "media").mkdir(exist_ok=True)
    (directory / "signing.key").write_text(_signing_key())
    log_config = {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(directory / "homeserver.log"),
                "encoding": "utf8",
            }
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    (directory / "log.yaml").write_text(json.dumps(log_config))
    config = {
        "server_name": SERVER_NAME,
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(directory / "log.yaml"),
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "url_preview_enabled": False,
        "enable_metrics": False,
        "presence": {"enabled": False},
        # Synapse keeps a finished /sync response 2 minutes for an identical request; a test that syncs
        # twice from scratch must see what happened in between.
        "caches": {"sync_response_cache_duration": 0},
        "bcrypt_rounds": 4,  # registering dozens of test users must not cost a quarter second each
        **_RATE_LIMITS,
    }
    path = directory / "homeserver.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


@contextmanager
def run_synapse(directory: Path, python: Path | None = None) -> Iterator[SynapseServer]:
    """Start Synapse in ``directory``, wait until it answers, and always stop it afterwards."""
    python = python or require_synapse_python()
    port = _free_port()
    shared_secret = secrets.token_hex(16)
    config = write_config(directory, port, shared_secret)
    stderr = (directory / "stderr.log").open("wb")
    process = subprocess.Popen(
        [str(python), "-m", "synapse.app.homeserver", "-c", str(config)],
        cwd=directory,
        stdout=stderr,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = SynapseServer(f"http://127.0.0.1:{port}", directory, shared_secret, process)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()
        stderr.close()


def _wait_ready(server: SynapseServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Synapse exited with {server.process.returncode}\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/_matrix/client/versions", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Synapse did not answer within {START_TIMEOUT:.0f} s\n{server.log_tail()}")


class Person:
    """A person on the homeserver, driven through the plain client-server API (independent of nio)."""

    def __init__(self, server: SynapseServer, user: MatrixUser) -> None:
        self.user = user
        self.user_id = user.user_id
        self.http = httpx.AsyncClient(
            base_url=f"{server.base_url}/_matrix/client/v3",
            headers={"Authorization": f"Bearer {user.access_token}"},
            timeout=30,
        )

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await self.http.request(method, path, json=body)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text}"
        return dict(resp.json())

    async def create_room(
        self,
        *,
        invite: Sequence[str] = (),
        public: bool = False,
        alias: str | None = None,
        encrypted: bool = False,
        name: str | None = None,
        is_direct: bool = False,
    ) -> str:
        body: dict[str, Any] = {"preset": "public_chat" if public else "private_chat", "invite": list(invite)}
        if alias:
            body["room_alias_name"] = alias
        if name:
            body["name"] = name
        if is_direct:
            body["is_direct"] = True
        if encrypted:
            body["initial_state"] = [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def join(self, room: str) -> None:
        await self.call("POST", f"/join/{quote(room)}", {})

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": user_id})

    async def kick(self, room_id: str, user_id: str) -> None:
        await self.call("POST", f"/rooms/{quote(room_id)}/kick", {"user_id": user_id, "reason": "test"})

    async def say(self, room_id: str, body: str) -> str:
        """Send an m.text message; returns its event id."""
        txn = uuid.uuid4().hex
        sent = await self.call(
            "PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body}
        )
        return str(sent["event_id"])

    async def messages(self, room_id: str) -> list[dict[str, Any]]:
        """The room's m.room.message events, oldest first."""
        data = await self.call("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=100")
        return [e for e in reversed(data["chunk"]) if e["type"] == "m.room.message"]

    async def membership(self, room_id: str, user_id: str) -> str:
        resp = await self.http.get(f"/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}")
        return str(resp.json().get("membership", "")) if resp.status_code == 200 else ""

    async def invites(self) -> dict[str, Any]:
        data = await self.call("GET", "/sync?timeout=0")
        return dict(data.get("rooms", {}).get("invite", {}))

    async def rooms_with(self, user_id: str) -> list[str]:
        """This person's direct rooms with ``user_id`` (the bot): rooms of the two of them alone.

        Invitations from ``user_id`` are accepted first, so the caller can read the messages.
        """
        data = await self.call("GET", "/sync?timeout=0")
        for room_id, info in data.get("rooms", {}).get("invite", {}).items():
            if any(e.get("sender") == user_id for e in info["invite_state"]["events"]):
                await self.join(room_id)
        found = []
        for room_id in (await self.call("GET", "/joined_rooms"))["joined_rooms"]:
            members = await self.call("GET", f"/rooms/{quote(room_id)}/joined_members")
            if set(members["joined"]) == {self.user_id, user_id}:
                found.append(room_id)
        return found


# ---------------------------------------------------------------------------------------------------------
# Fixtures (registered for the whole suite in tests/conftest.py, so one Synapse serves every test)

NewUser = Callable[[str], Awaitable["Person"]]


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    with run_synapse(tmp_path_factory.mktemp("synapse")) as server:
        yield server


@pytest.fixture
async def new_user(synapse: SynapseServer) -> AsyncIterator[NewUser]:
    """Fresh human users on the test Synapse, their HTTP clients closed afterwards."""
    humans: list[Person] = []

    async def make(prefix: str) -> Person:
        human = Person(synapse, synapse.register(f"{prefix}-{uuid.uuid4().hex[:8]}"))
        humans.append(human)
        return human

    yield make
    for human in humans:
        await human.http.aclose()


@pytest.fixture
def bot(synapse: SynapseServer) -> MatrixUser:
    """The hub's bot account, exempt from Synapse's message limits (FACTS: override_ratelimit)."""
    user = synapse.register(f"dukcapil-{uuid.uuid4().hex[:8]}")
    synapse.override_ratelimit(user.user_id, 0, 0)
    return user


@pytest.fixture
async def bot_person(synapse: SynapseServer, bot: MatrixUser) -> AsyncIterator[Person]:
    """The bot's account driven as a plain client (its own device), to join rooms as an operator would."""
    person = Person(synapse, bot)
    yield person
    await person.http.aclose()
