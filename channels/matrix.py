"""Matrix adapter on matrix-nio: rooms for kelurahan offices, direct rooms for citizens.

Why it looks the way it does:

* Every send carries the transaction id ``hub-<delivery_id>`` from one fixed device, so a send retried after
  a crash returns the first event instead of posting twice (DESIGN rule 8, FACTS: txn scope is per device).
* nio would retry a 429 forever; here it gives up at once and the hub's shared pacer obeys "retry after".
* Encrypted rooms need synced room state and a crypto store on disk; a room this process does not know yet
  is synced before the first send to it.
* One device, one process. The crypto store (olm account, megolm sessions, sync token) must never be used
  by two processes at once, and transaction ids only deduplicate within one device. So the process that
  opens the adapter first takes an exclusive lock on ``<store_path>/<device_id>.lock`` (``flock``: the
  kernel drops it the moment that process dies, even on SIGKILL) and owns the device; any other process
  is a standby. A standby answers every item at once with ``RetryLater`` (``standby_retry_seconds``) and
  takes the device over as soon as the lock is free; its ``listen`` waits for the lock. ``ready()`` says
  which one this is, so the hub can leave a standby's items unclaimed instead.
* Direct rooms are remembered in the account's ``m.direct`` data, not in the hub's database, so a restarted
  worker finds the same room for a citizen. Writes of ``m.direct`` are serialised in the owning process;
  a room created just before a crash (not yet in ``m.direct``) is found again by its members.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import html
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DirectRoomsResponse,
    ErrorResponse,
    InviteMemberEvent,
    JoinError,
    LoginResponse,
    MatrixRoom,
    ProfileGetError,
    RoomCreateError,
    RoomGetStateEventError,
    RoomMemberEvent,
    RoomMessageText,
    RoomPreset,
    RoomResolveAliasError,
    RoomSendResponse,
    SyncResponse,
    UnknownAccountDataEvent,
    WhoamiResponse,
)
from nio.api import Api
from nio.crypto import ENCRYPTION_ENABLED

from channels.base import (
    Channel,
    Content,
    Inbound,
    InboundSink,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
)

log = logging.getLogger(__name__)

# English command words map onto the Indonesian ones the hub implements.
ENGLISH_COMMANDS: Mapping[str, str] = {
    "subscribe": "langganan",
    "unsubscribe": "berhenti",
    "hours": "jam",
    "services": "layanan",
    "track": "lacak",
    "help": "bantuan",
}

_SERVER = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?"
_USER_RE = re.compile(rf"@([a-z0-9._=\-/+]+):({_SERVER})")
_ALIAS_RE = re.compile(rf"#([^:\s]+):({_SERVER})")
# Room ids are opaque; room version 12 drops the ``:server`` part, so it is optional here.
_ROOM_RE = re.compile(rf"!([A-Za-z0-9._~+/=\-]+)(?::({_SERVER}))?")
_MATRIX_TO = "https://matrix.to/#/"

_GONE_CODES = {"M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN_ROOM"}
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError)


class DeviceBusy(RuntimeError):
    """Another process owns this bot's device (and its crypto store): this one must not use it."""


def server_of(matrix_id: str) -> str:
    """The server name of a user id, alias or room id ('' for a server-less room id)."""
    return matrix_id.split(":", 1)[1].lower() if ":" in matrix_id else ""


def parse_command(body: str) -> tuple[str, tuple[str, ...], str] | None:
    """``!Jam besok`` -> ``("jam", ("besok",), "id")``; English synonyms answer in English."""
    if not body.startswith("!"):
        return None
    words = body[1:].split()
    if not words:
        return None
    command = words[0].lower()
    locale = "id"
    if command in ENGLISH_COMMANDS:
        command, locale = ENGLISH_COMMANDS[command], "en"
    return command, tuple(words[1:]), locale


def render(content: Content) -> tuple[str, str]:
    """Plain body and HTML body; Matrix HTML needs ``<br>`` for line breaks, buttons become links."""
    body = content.text
    formatted = content.html if content.html is not None else html.escape(content.text)
    links = [b for b in content.buttons if b.url]
    if links:
        body += "\n\n" + "\n".join(f"{b.text}: {b.url}" for b in links)
        formatted += "\n\n" + " | ".join(
            f'<a href="{html.escape(b.url or "", quote=True)}">{html.escape(b.text)}</a>' for b in links
        )
    return body, formatted.replace("\r\n", "\n").replace("\n", "<br>")


def outcome_for_error(resp: ErrorResponse, *, action: str = "send") -> Outcome:
    """Map a homeserver error to one of the hub's outcomes (DESIGN rule 6)."""
    code = resp.status_code or ""
    http_status = getattr(getattr(resp, "transport_response", None), "status", None)
    reason = f"{action}: {code or http_status or 'error'} {resp.message}".strip()
    if code == "M_LIMIT_EXCEEDED" or http_status == 429:
        return RetryLater(reason, retry_after_seconds(resp))
    if code in _GONE_CODES:
        return RecipientGone(reason)
    if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
        # The bot's credentials are wrong: not the recipient's fault, and fixable by an operator.
        return RetryLater(reason, 300.0)
    if not code or (http_status is not None and http_status >= 500):
        return RetryLater(reason, None)
    return Rejected(reason)


def retry_after_seconds(resp: ErrorResponse) -> float | None:
    """``retry_after_ms`` from the body, else the ``Retry-After`` header (spec 1.10+), else None."""
    if resp.retry_after_ms:
        return resp.retry_after_ms / 1000
    headers = getattr(getattr(resp, "transport_response", None), "headers", None) or {}
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class MatrixChannel(Channel):
    """One bot account on one homeserver, with a fixed device."""

    name: ClassVar[str] = "matrix"
    batch_size: ClassVar[int] = 50
    #: A Matrix device (its crypto store, its transaction ids) belongs to one session in one process.
    instance_per_lane: ClassVar[bool] = False
    listens_in_worker: ClassVar[bool] = True
    command_prefix: ClassVar[str] = "!"
    #: The bot may open a direct room with a citizen (``!lacak`` asked in a shared room is answered there).
    initiates_direct: ClassVar[bool] = True

    def __init__(
        self,
        *,
        homeserver: str,
        user_id: str,
        device_id: str,
        access_token: str | None = None,
        password: str | None = None,
        store_path: str | None = None,
        rate_per_second: float = 5.0,
        allowed_servers: Sequence[str] = (),
        msgtype: str = "m.notice",
        concurrency: int = 8,
        poll_timeout: float = 10.0,
        backlog_seconds: float = 600.0,
        encryption: bool = True,
        encrypt_direct_rooms: bool = False,
        device_name: str = "disdukcapil-hub",
        standby_retry_seconds: float = 5.0,
    ) -> None:
        if not (access_token or password):
            raise ValueError("matrix: set access_token or password")
        if not device_id:
            raise ValueError("matrix: device_id is required (transaction ids are scoped per device)")
        self.homeserver = homeserver.rstrip("/")
        self.user_id = user_id
        self.device_id = device_id
        self.access_token = access_token
        self.password = password
        self.store_path = Path(store_path) if store_path else None
        self.rate = Rate(f"mx:{urlsplit(self.homeserver).netloc or self.homeserver}", rate_per_second)
        self.allowed_servers = {s.lower() for s in allowed_servers}
        self.msgtype = msgtype
        self.concurrency = max(1, concurrency)
        self.poll_timeout = poll_timeout
        self.backlog_seconds = backlog_seconds
        # Encryption needs the optional vodozemac dependency and a store that survives restarts.
        self.encryption = bool(encryption and ENCRYPTION_ENABLED and self.store_path)
        self.encrypt_direct_rooms = encrypt_direct_rooms and self.encryption
        self.device_name = device_name
        self.standby_retry_seconds = standby_retry_seconds
        self.client: AsyncClient | None = None
        self._lock_fd: int | None = None
        self._direct: dict[str, str] = {}  # citizen user id -> direct room id, from m.direct
        self._orphans: dict[str, str] | None = None  # direct rooms m.direct lacks (see _adopt_direct_room)
        self._aliases: dict[str, str] = {}
        self._dm_locks: dict[str, asyncio.Lock] = {}
        self._sync_lock = asyncio.Lock()
        self._synced = asyncio.Event()  # replaced after every sync; waiters hold the old one
        self._sync_started = 0  # syncs begun ...
        self._sync_done = 0  # ... and the number of the latest one that finished
        self._listening = False
        self._handled_invites: set[str] = set()
        self._open_lock = asyncio.Lock()
        self._direct_write_lock = asyncio.Lock()
        self._direct_version = 0  # bumped by every change to _direct ...
        self._direct_saved = 0  # ... and the version the last successful m.direct write contained

    # ----------------------------------------------------------------------------------------------------
    # Setup

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> MatrixChannel:
        missing = [k for k in ("homeserver", "user_id", "device_id") if not settings.get(k)]
        if missing:
            raise ValueError(f"matrix: missing settings {', '.join(missing)}")
        known = {
            "homeserver",
            "user_id",
            "device_id",
            "access_token",
            "password",
            "store_path",
            "rate_per_second",
            "allowed_servers",
            "msgtype",
            "concurrency",
            "poll_timeout",
            "backlog_seconds",
            "encryption",
            "encrypt_direct_rooms",
            "device_name",
            "standby_retry_seconds",
            "enabled",
            "mode",
        }
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"matrix: unknown settings {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in settings.items() if k in known - {"enabled", "mode"}})

    async def open(self) -> None:
        """Log in on the fixed device, unless another process owns it: then stay a standby (no error)."""
        async with self._open_lock:
            if self.client is not None:
                return
            if not self._acquire_device():
                log.info("matrix: device %s is owned by another process: standby", self.device_id)
                return
            try:
                await self._open()
            except BaseException:
                self._release_device()
                raise

    async def ready(self) -> bool:
        """Whether this process owns the device and can send now (a standby tries to take it over)."""
        if self.client is None:
            with contextlib.suppress(*_NETWORK_ERRORS, RuntimeError):
                await self.open()
        return self.client is not None

    # The device lock: see the module docstring. Without a store there is nothing to corrupt, no lock.
    def _acquire_device(self) -> bool:
        if self.store_path is None or self._lock_fd is not None:
            return True
        self.store_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store_path / f"{self.device_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for an operator wondering who holds it
        self._lock_fd = fd
        return True

    def _release_device(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def _open(self) -> None:
        if self.store_path:
            self.store_path.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            max_limit_exceeded=0,
            max_timeouts=2,
            request_timeout=30,
            store_sync_tokens=True,
            encryption_enabled=self.encryption,
        )
        client = AsyncClient(
            self.homeserver,
            self.user_id,
            device_id=self.device_id,
            store_path=str(self.store_path) if self.store_path else "",
            config=config,
        )
        try:
            await self._log_in(client)
            if not client.loaded_sync_token:
                client.loaded_sync_token = self._read_token_file()
            if client.olm and client.should_upload_keys:
                resp = await client.keys_upload()
                if isinstance(resp, ErrorResponse):
                    log.warning("matrix: uploading device keys failed (%s); encrypted rooms may fail", resp)
            self.client = client
            await self._load_direct_rooms()
        except BaseException:
            self.client = None
            await client.close()
            raise
        if ENCRYPTION_ENABLED and not self.encryption:
            log.info("matrix: end-to-end encryption is off (no store_path or encryption = false)")

    async def _log_in(self, client: AsyncClient) -> None:
        """Use the configured token, checking it belongs to the fixed device, or log in on that device."""
        if self.access_token:
            client.restore_login(self.user_id, self.device_id, self.access_token)
            who = await client.whoami()
            if not isinstance(who, WhoamiResponse):
                raise RuntimeError(f"matrix: access token rejected: {who}")
            if who.device_id and who.device_id != self.device_id:
                raise RuntimeError(
                    f"matrix: token belongs to device {who.device_id}, settings say {self.device_id}; "
                    "transaction ids would not deduplicate"
                )
            return
        resp = await client.login(self.password, device_name=self.device_name)
        if not isinstance(resp, LoginResponse):
            raise RuntimeError(f"matrix: login failed: {resp}")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        self._release_device()

    async def _client(self) -> AsyncClient:
        if self.client is None:
            await self.open()
        if self.client is None:
            raise DeviceBusy(f"device {self.device_id} is owned by another process")
        return self.client

    # Without the e2e extra nio keeps no store, so the sync token lives in a small file instead.
    def _read_token_file(self) -> str:
        if self.store_path and (self.store_path / "next_batch").exists():
            return (self.store_path / "next_batch").read_text().strip()
        return ""

    def _write_token_file(self, token: str) -> None:
        if self.store_path and self.client is not None and self.client.store is None:
            (self.store_path / "next_batch").write_text(token)

    # ----------------------------------------------------------------------------------------------------
    # Addresses

    def normalize_address(self, raw: str) -> str:
        value = raw.strip()
        if value.startswith(_MATRIX_TO):
            value = value[len(_MATRIX_TO) :].split("?", 1)[0]
        if not value:
            raise InvalidAddress("empty Matrix address")
        sigil = value[0]
        if sigil == "@":
            local, _, server = value[1:].partition(":")
            candidate = f"@{local.lower()}:{server.lower()}"
            if not _USER_RE.fullmatch(candidate):
                raise InvalidAddress(f"not a Matrix user id (expected @name:server): {raw!r}")
            return candidate
        if sigil == "#":
            match = _ALIAS_RE.fullmatch(value)
            if not match:
                raise InvalidAddress(f"not a Matrix room alias (expected #name:server): {raw!r}")
            return f"#{match.group(1)}:{match.group(2).lower()}"
        if sigil == "!":
            match = _ROOM_RE.fullmatch(value)
            if not match:
                raise InvalidAddress(f"not a Matrix room id (expected !id:server): {raw!r}")
            return f"!{match.group(1)}:{match.group(2).lower()}" if match.group(2) else value
        raise InvalidAddress(f"a Matrix address starts with @ (user), # (alias) or ! (room): {raw!r}")

    def mask_address(self, address: str) -> str:
        """Citizens' user ids are personal data; rooms of offices are not."""
        if address.startswith("@") and ":" in address:
            local, server = address[1:].split(":", 1)
            return f"@{local[:1]}***:{server}"
        return address

    # ----------------------------------------------------------------------------------------------------
    # Sending

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        """Rooms in parallel (bounded), each room's items in order; outcomes yielded as they come."""
        try:
            await self._client()
        except DeviceBusy as exc:  # a standby: the owning process sends; quickly hand the items back
            for item in items:
                yield item.delivery_id, RetryLater(str(exc), self.standby_retry_seconds)
            return
        except _NETWORK_ERRORS as exc:  # homeserver unreachable: every item can be tried again later
            for item in items:
                yield item.delivery_id, RetryLater(f"network: {exc!r}", None)
            return
        groups: dict[str, list[Outbound]] = {}
        for item in items:
            groups.setdefault(item.address, []).append(item)
        results: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
        limit = asyncio.Semaphore(self.concurrency)

        async def run(group: list[Outbound]) -> None:
            async with limit:
                for item in group:
                    await results.put((item.delivery_id, await self._send_safely(item, pacer)))

        tasks = [asyncio.create_task(run(group)) for group in groups.values()]
        try:
            for _ in range(len(items)):
                yield await results.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_safely(self, item: Outbound, pacer: Pacer) -> Outcome:
        try:
            return await self._send_one(item, pacer)
        except _NETWORK_ERRORS as exc:
            return RetryLater(f"network: {exc!r}", None)
        except Exception as exc:  # one recipient's failure must not sink the batch
            log.exception("matrix: unexpected error sending delivery %s", item.delivery_id)
            return RetryLater(f"unexpected: {exc!r}", None)

    async def _send_one(self, item: Outbound, pacer: Pacer) -> Outcome:
        client = await self._client()
        try:
            address = self.normalize_address(item.address)
        except InvalidAddress as exc:
            return Rejected(str(exc))
        target = await self._room_for(address)
        if not isinstance(target, str):
            return target
        room_id = target
        known = await self._ensure_room(room_id)
        if known is not None:
            return known
        room = client.rooms[room_id]
        if address.startswith("@") and address not in room.users:
            membership = await self._membership(room_id, address)  # synced state may lag behind
            if not isinstance(membership, str):
                return membership
            if membership not in ("join", "invite"):
                self._forget_direct(address, room_id)
                return RecipientGone("citizen left the direct room")
        if room.encrypted and client.olm is None:
            return Rejected("room is encrypted and this bot has no e2e store (install matrix-nio[e2e])")

        body, formatted = render(item.content)
        content = {
            "msgtype": item.extra.get("msgtype", self.msgtype),
            "body": body,
            "format": "org.matrix.custom.html",
            "formatted_body": formatted,
        }
        await pacer.wait([self.rate], item.lane)
        resp = await client.room_send(
            room_id,
            "m.room.message",
            content,
            tx_id=f"hub-{item.delivery_id}",
            ignore_unverified_devices=True,
        )
        if isinstance(resp, RoomSendResponse):
            return Sent(resp.event_id)
        outcome = outcome_for_error(resp)
        if isinstance(outcome, RetryLater) and outcome.delay is not None:
            await pacer.pause(self.rate.key, outcome.delay)
        if isinstance(outcome, RecipientGone):
            client.rooms.pop(room_id, None)
            if address.startswith("@"):
                self._forget_direct(address, room_id)
        return outcome

    async def _room_for(self, address: str) -> str | Outcome:
        """The room id an address sends to: itself, its alias's room, or the citizen's direct room."""
        client = await self._client()
        if address.startswith("!"):
            return address
        if address.startswith("#"):
            if address not in self._aliases:
                resp = await client.room_resolve_alias(address)
                if isinstance(resp, RoomResolveAliasError):
                    return outcome_for_error(resp, action="resolve alias")
                self._aliases[address] = resp.room_id
            return self._aliases[address]
        lock = self._dm_locks.setdefault(address, asyncio.Lock())
        async with lock:
            if address in self._direct:
                return self._direct[address]
            return await self._create_direct_room(address)

    async def _create_direct_room(self, user_id: str) -> str | Outcome:
        """First contact with a citizen: check the user exists, open a direct room, record it in m.direct."""
        client = await self._client()
        found = await self._adopt_direct_room(user_id)
        if found is not None:
            return found
        profile = await client.get_profile(user_id)
        if isinstance(profile, ProfileGetError):
            if profile.status_code in ("M_NOT_FOUND", "M_UNKNOWN"):
                return Rejected(f"unknown Matrix user: {profile.status_code} {profile.message}")
            outcome = outcome_for_error(profile, action="profile lookup")
            if isinstance(outcome, RetryLater):
                return outcome
            # Other refusals (profiles hidden by policy) do not prove absence: let the invite decide.
        initial_state = []
        if self.encrypt_direct_rooms:
            encryption = {"algorithm": "m.megolm.v1.aes-sha2"}
            initial_state.append({"type": "m.room.encryption", "state_key": "", "content": encryption})
        resp = await client.room_create(
            is_direct=True,
            invite=[user_id],
            preset=RoomPreset.trusted_private_chat,
            initial_state=initial_state,
        )
        if isinstance(resp, RoomCreateError):
            outcome = outcome_for_error(resp, action="create direct room")
            if isinstance(outcome, RecipientGone):  # e.g. invite refused: the user cannot be reached
                return Rejected(outcome.reason)
            return outcome
        await self._remember_direct(user_id, resp.room_id)
        if not self.encrypt_direct_rooms and resp.room_id not in client.rooms:
            # We made this room and know its state: no sync needed before the first message. (An
            # encrypted one waits for a sync, which brings the members whose devices get the keys.)
            room = MatrixRoom(resp.room_id, client.user_id, encrypted=False)
            room.add_member(client.user_id, None, None)
            room.add_member(user_id, None, None, invited=True)
            client.rooms[resp.room_id] = room
        return resp.room_id

    async def _adopt_direct_room(self, user_id: str) -> str | None:
        """A direct room with ``user_id`` that ``m.direct`` does not list: created just before a crash.

        Only rooms without a name or alias whose members (joined or invited) are the bot and the citizen
        count, the same rooms ``_chat_kind`` treats as a person's. Needs synced state: sync once if none.
        """
        client = await self._client()
        if self._orphans is None:
            # Indexed once, from the first sync: later rooms are made here and recorded as they are made.
            if not client.next_batch:
                await self._refresh()
            known = set(self._direct.values())
            self._orphans = {}
            for room_id, room in client.rooms.items():
                others = set(room.users) - {client.user_id}
                if room_id not in known and room.is_group and len(others) == 1 and len(room.users) == 2:
                    self._orphans[others.pop()] = room_id
        room_id = self._orphans.pop(user_id, None)
        if room_id is None or room_id not in client.rooms:
            return None
        log.info("matrix: found an unrecorded direct room for %s", self.mask_address(user_id))
        await self._remember_direct(user_id, room_id)
        return room_id

    async def _ensure_room(self, room_id: str) -> Outcome | None:
        """Make sure synced state for ``room_id`` exists (encryption needs it); None when it does."""
        client = await self._client()
        for fresh in (False, True):
            if room_id in client.rooms:
                return None
            await self._refresh(fresh=fresh)
            if room_id not in client.rooms and room_id in client.invited_rooms:
                resp = await client.join(room_id)
                if isinstance(resp, JoinError):
                    return outcome_for_error(resp, action="join")
        if room_id in client.rooms:
            return None
        # "Gone" deactivates the endpoint for good: ask the homeserver, not only our synced state.
        membership = await self._membership(room_id, client.user_id)
        if membership == "join":
            return RetryLater("room state not synced yet", 1.0)
        if isinstance(membership, str):
            return RecipientGone("the bot is not a member of the room")
        return membership

    async def _membership(self, room_id: str, user_id: str) -> str | Outcome:
        """A member's membership as the homeserver has it now ('' when it shows none to the bot)."""
        client = await self._client()
        resp = await client.room_get_state_event(room_id, "m.room.member", user_id)
        if isinstance(resp, RoomGetStateEventError):
            outcome = outcome_for_error(resp, action="membership")
            return outcome if isinstance(outcome, RetryLater) else ""
        return str(resp.content.get("membership", ""))

    async def _refresh(self, *, fresh: bool = False) -> None:
        """Bring room state up to date with a sync that began after this call.

        A sync already running may have been computed before the room (or its last member) existed; the
        homeserver writes a new room's events one by one. Listening, the listen loop's next sync is waited
        for, and with ``fresh`` one that began after this call; otherwise this syncs, unless a sync that
        began after the call has finished meanwhile.
        """
        mark = self._sync_started
        if self._listening:
            deadline = time.monotonic() + self.poll_timeout + 10
            while True:
                event = self._synced
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), max(0.0, deadline - time.monotonic()))
                if not fresh or self._sync_done > mark or time.monotonic() >= deadline:
                    return
        async with self._sync_lock:
            if self._sync_done > mark:
                return
            await self._sync(0)

    # ----------------------------------------------------------------------------------------------------
    # Direct rooms, remembered in m.direct account data

    async def _load_direct_rooms(self) -> None:
        client = await self._client()
        resp = await client.list_direct_rooms()
        if isinstance(resp, DirectRoomsResponse):
            self._set_direct(resp.rooms)

    def _set_direct(self, rooms: Mapping[str, Sequence[str]]) -> None:
        # The newest room per user is the one in use (m.direct lists may grow over time).
        self._direct = {user: ids[-1] for user, ids in rooms.items() if ids}

    def _forget_direct(self, user_id: str, room_id: str) -> None:
        if self._direct.get(user_id) == room_id:
            del self._direct[user_id]

    async def _remember_direct(self, user_id: str, room_id: str) -> None:
        """Read-modify-write of m.direct, so rooms other clients of the account recorded are kept.

        Serialised: concurrent sends to new citizens would otherwise overwrite each other's entries. The
        room in use goes last (``_set_direct`` reads the last one).
        """
        client = await self._client()
        self._direct[user_id] = room_id
        self._direct_version += 1
        wanted = self._direct_version
        async with self._direct_write_lock:
            if self._direct_saved >= wanted:
                return  # a write that began after ours was recorded carried it (writes coalesce)
            version = self._direct_version
            if await self._write_direct(client, user_id, room_id):
                self._direct_saved = version

    async def _write_direct(self, client: AsyncClient, user_id: str, room_id: str) -> bool:
        current: dict[str, list[str]] = {}
        resp = await client.list_direct_rooms()
        if isinstance(resp, DirectRoomsResponse):
            current = {user: list(ids) for user, ids in resp.rooms.items()}
        # What this process knows is newer than the server's copy (an earlier write may have failed).
        for user, known in self._direct.items():
            ids = current.setdefault(user, [])
            if not ids or ids[-1] != known:
                current[user] = [r for r in ids if r != known] + [known]
        rooms = current.setdefault(user_id, [])
        if not rooms or rooms[-1] != room_id:
            current[user_id] = [r for r in rooms if r != room_id] + [room_id]
        path = Api._build_path(["user", client.user_id, "account_data", "m.direct"])
        headers = {"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"}
        http = await client.send("PUT", path, json.dumps(current), headers)
        ok = http.status == 200
        if not ok:
            log.warning("matrix: saving m.direct failed with HTTP %s", http.status)
        http.release()
        return ok

    # ----------------------------------------------------------------------------------------------------
    # Syncing and listening

    def _sync_filter(self, first: bool) -> dict[str, Any]:
        return {
            "room": {
                "timeline": {"limit": 1 if first else 100},
                "state": {"lazy_load_members": False},
            },
            "presence": {"not_types": ["*"]},
        }

    async def _sync(self, timeout_ms: int) -> SyncResponse | None:
        """One sync plus the crypto upkeep nio's sync_forever would do; callers hold the sync lock."""
        client = await self._client()
        self._sync_started += 1
        number = self._sync_started
        first = not client.next_batch
        full_state = True if first and client.loaded_sync_token else None
        resp = await client.sync(
            timeout=timeout_ms,
            sync_filter=self._sync_filter(first and not client.loaded_sync_token),
            full_state=full_state,
        )
        if not isinstance(resp, SyncResponse):
            log.warning("matrix: sync failed: %s", resp)
            return None
        self._write_token_file(resp.next_batch)
        for room_id in resp.rooms.leave:
            client.rooms.pop(room_id, None)
            self._aliases = {a: r for a, r in self._aliases.items() if r != room_id}
        for event in resp.account_data_events:
            # Another worker may have opened a direct room: its m.direct update arrives here.
            if isinstance(event, UnknownAccountDataEvent) and event.type == "m.direct":
                self._set_direct(event.content)
        if client.olm:
            await self._crypto_upkeep()
        self._sync_done = max(self._sync_done, number)
        done, self._synced = self._synced, asyncio.Event()
        done.set()
        return resp

    async def _crypto_upkeep(self) -> None:
        client = await self._client()
        await client.send_to_device_messages()
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    async def listen(self, sink: InboundSink) -> None:
        """Long-poll sync; commands and DM text go to ``sink``; invites from allowed servers are joined.

        A standby waits until the device is free (its owner stopped or died), then listens as the owner.
        """
        while True:
            try:
                client = await self._client()
                break
            except DeviceBusy:
                await asyncio.sleep(self.standby_retry_seconds)
        self._listening = True
        started_ms = time.time() * 1000
        skip_timeline = not (client.next_batch or client.loaded_sync_token)
        backoff = 1.0
        try:
            while True:
                try:
                    async with self._sync_lock:
                        resp = await self._sync(0 if skip_timeline else int(self.poll_timeout * 1000))
                except _NETWORK_ERRORS as exc:
                    resp = None
                    log.warning("matrix: sync failed: %r", exc)
                if resp is None:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 1.0
                await self._handle_invites(resp)
                if not skip_timeline:
                    await self._dispatch(resp, sink, started_ms - self.backlog_seconds * 1000)
                skip_timeline = False
        finally:
            self._listening = False

    async def _handle_invites(self, resp: SyncResponse) -> None:
        client = await self._client()
        for room_id, info in resp.rooms.invite.items():
            if room_id in self._handled_invites:
                continue
            invite = next(
                (
                    e
                    for e in info.invite_state
                    if isinstance(e, InviteMemberEvent)
                    and e.state_key == client.user_id
                    and e.membership == "invite"
                ),
                None,
            )
            inviter = invite.sender if invite is not None else ""
            self._handled_invites.add(room_id)
            if server_of(inviter) in self.allowed_servers:
                result = await client.join(room_id)
                if isinstance(result, JoinError):
                    log.warning("matrix: joining %s failed: %s", room_id, result)
                    self._handled_invites.discard(room_id)
                elif invite is not None and invite.content.get("is_direct"):
                    # A citizen opened a direct chat with the bot: answers to them go to this room.
                    await self._remember_direct(inviter, room_id)
            else:
                log.info("matrix: rejecting invite to %s from %s", room_id, server_of(inviter) or "?")
                await client.room_leave(room_id)

    def _chat_kind(self, room_id: str) -> str:
        """``person`` for a direct room: listed in m.direct, or unnamed with only the bot and one person.

        A named room (a kelurahan's) is a group even while its admin and the bot are its only members.
        """
        if room_id in self._direct.values():
            return "person"
        room = self.client.rooms.get(room_id) if self.client else None
        return "person" if room is not None and room.is_group and room.member_count <= 2 else "group"

    async def _deliver(self, sink: InboundSink, inbound: Inbound) -> None:
        """The sync token has already moved on: a failing sink loses this record, not the loop."""
        try:
            await sink(inbound)
        except Exception:
            log.exception("matrix: inbound handler failed for %s in %s", inbound.kind, inbound.address)

    async def _dispatch(self, resp: SyncResponse, sink: InboundSink, oldest_ms: float) -> None:
        client = await self._client()
        for room_id, info in resp.rooms.join.items():
            for event in info.timeline.events:
                if getattr(event, "server_timestamp", 0) < oldest_ms:
                    continue
                inbound = self._inbound_for(event, room_id, client.user_id)
                if inbound is None:
                    continue
                if (
                    inbound.chat_kind == "person"
                    and inbound.kind != "member"
                    and inbound.sender
                    and self._direct.get(inbound.sender) != room_id
                ):
                    # Answers to this person go where they wrote, not to another room of theirs.
                    await self._remember_direct(inbound.sender, room_id)
                await self._deliver(sink, inbound)
        for room_id, info in resp.rooms.leave.items():
            # Removed from a room it was in (kicked, banned); a declined invite is not a removal.
            own = [
                e
                for e in info.timeline.events
                if isinstance(e, RoomMemberEvent)
                and e.state_key == client.user_id
                and e.membership in ("leave", "ban")
                and e.prev_membership != "invite"
            ]
            if own and own[-1].server_timestamp >= oldest_ms:
                kind = self._chat_kind(room_id)
                self._direct = {u: r for u, r in self._direct.items() if r != room_id}
                await self._deliver(
                    sink,
                    Inbound(
                        channel=self.name,
                        kind="member",
                        address=room_id,
                        sender=own[-1].sender,
                        chat_kind=kind,
                        text="removed",
                    ),
                )

    def _inbound_for(self, event: Any, room_id: str, own_id: str) -> Inbound | None:
        """One timeline event of a joined room as an inbound record, or None if it is not for the hub."""
        base = {
            "channel": self.name,
            "address": room_id,
            "sender": event.sender,
            "chat_kind": self._chat_kind(room_id),
        }
        if isinstance(event, RoomMemberEvent):
            joined = event.membership == "join" and event.prev_membership != "join"
            # "added" is about groups (a kelurahan room to register); a direct chat needs no such welcome.
            if event.state_key == own_id and joined and base["chat_kind"] == "group":
                return Inbound(kind="member", text="added", **base)
            return None
        # m.text only: m.notice is what bots send, and answering bots invites loops.
        if not isinstance(event, RoomMessageText) or event.sender == own_id:
            return None
        parsed = parse_command(event.body)
        if parsed:
            command, args, locale = parsed
            return Inbound(
                kind="command",
                command=command,
                args=args,
                text=event.body,
                locale=locale,
                reply_ref=event.event_id,
                **base,
            )
        if base["chat_kind"] == "person":
            return Inbound(kind="text", text=event.body, reply_ref=event.event_id, **base)
        return None


CHANNEL = MatrixChannel
