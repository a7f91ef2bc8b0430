"""The Matrix adapter: settings, capabilities, addresses and sending."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nio import (
    AsyncClient,
    MatrixRoom,
    ProfileGetError,
    RoomCreateError,
    RoomPreset,
    RoomResolveAliasError,
    RoomSendResponse,
)
from nio.crypto import ENCRYPTION_ENABLED
from pydantic import Field

from channels.base import (
    Capabilities,
    Channel,
    ChannelSettings,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    outcome_of_error,
)
from channels.matrix.errors import _NETWORK_ERRORS, DeviceBusy, outcome_for_error
from channels.matrix.html import render
from channels.matrix.inbound import MatrixInbound

log = logging.getLogger("channels.matrix")

_SERVER = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?"
_USER_RE = re.compile(rf"@([a-z0-9._=\-/+]+):({_SERVER})")
_ALIAS_RE = re.compile(rf"#([^:\s]+):({_SERVER})")
# Room ids are opaque; room version 12 drops the ``:server`` part, so it is optional here.
_ROOM_RE = re.compile(rf"!([A-Za-z0-9._~+/=\-]+)(?::({_SERVER}))?")
_MATRIX_TO = "https://matrix.to/#/"


class MatrixSettings(ChannelSettings):
    """``[channels.matrix]``."""

    homeserver: str
    user_id: str
    #: Fixed: transaction ids are scoped per device, which is what makes a resend return the first event.
    device_id: str
    #: One of these two; put it in the environment (``HUB_CHANNELS__MATRIX__ACCESS_TOKEN``).
    access_token: str | None = None
    password: str | None = None
    #: Crypto store and sync token, kept on disk; the device lock lives here too.
    store_path: str | None = None
    rate_per_second: float = Field(5.0, gt=0)
    #: Invites are accepted only from these servers.
    allowed_servers: list[str] = Field(default_factory=list)
    msgtype: str = "m.notice"
    concurrency: int = Field(8, ge=1)
    poll_timeout: float = Field(10.0, ge=0)
    #: Commands older than this when the listener starts are not answered.
    backlog_seconds: float = Field(600.0, ge=0)
    encryption: bool = True
    encrypt_direct_rooms: bool = False
    device_name: str = "disdukcapil-hub"
    standby_retry_seconds: float = Field(5.0, gt=0)


class MatrixChannel(MatrixInbound, Channel):
    """One bot account on one homeserver, with a fixed device."""

    name: ClassVar[str] = "matrix"
    settings_model = MatrixSettings
    # A Matrix device (its crypto store, its transaction ids) belongs to one session in one process: one
    # instance for both lanes, synced by the worker that sends, and never opened by an API process. The
    # bot may open a direct room with a citizen (``!lacak`` asked in a shared room is answered there).
    capabilities = Capabilities(
        listening="worker",
        instance_per_lane=False,
        worker_only=True,
        command_prefix="!",
        reactions=True,
        initiates_direct=True,
        batch_size=50,
    )

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
        self.capabilities = replace(type(self).capabilities, concurrency=self.concurrency)
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
        conf = cls.validate_settings(settings)
        assert isinstance(conf, MatrixSettings)
        return cls(**conf.model_dump(exclude={"enabled"}))

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
    # ----------------------------------------------------------------------------------------------------
    # Addresses

    async def check_credentials(self) -> str:
        """``whoami`` with the access token (``hub doctor``); with a password only, that the homeserver
        answers: a login there would end the session of the workers that own the device."""
        import httpx

        async with httpx.AsyncClient(base_url=self.homeserver, timeout=10) as http:
            if not self.access_token:
                (await http.get("/_matrix/client/versions")).raise_for_status()
                return "the homeserver answers (password not tried: a login would end the workers' session)"
            who = await http.get(
                "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {self.access_token}"}
            )
        if who.status_code != 200:
            raise RuntimeError(f"the homeserver refused the access token (HTTP {who.status_code})")
        found = who.json()
        if found.get("user_id") != self.user_id:
            raise RuntimeError(f"the access token belongs to {found.get('user_id')}, not {self.user_id}")
        if found.get("device_id") and found["device_id"] != self.device_id:
            raise RuntimeError(f"the token is of device {found['device_id']}, settings say {self.device_id}")
        return f"the access token is {self.user_id}'s, device {self.device_id}"

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
                yield item.delivery_id, RetryLater(str(exc), self.standby_retry_seconds, provider=True)
            return
        except _NETWORK_ERRORS as exc:  # homeserver unreachable: every item can be tried again later
            for item in items:
                yield item.delivery_id, RetryLater(f"network: {exc!r}", None, provider=True)
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
            return RetryLater(f"network: {exc!r}", None, provider=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one recipient's failure must not sink the batch, nor hang its row
            return outcome_of_error(self.name, item, exc)

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


CHANNEL = MatrixChannel
