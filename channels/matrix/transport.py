"""The bot's session: one device, locked to one process, logged in once; room state and ``m.direct``.

See the package docstring for why a device belongs to one process (``flock`` on ``<store>/<device>.lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nio import (
    AsyncClient,
    AsyncClientConfig,
    DirectRoomsResponse,
    ErrorResponse,
    JoinError,
    LoginResponse,
    RoomGetStateEventError,
    SyncResponse,
    WhoamiResponse,
)
from nio.api import Api
from nio.crypto import ENCRYPTION_ENABLED

from channels.base import (
    Outcome,
    RecipientGone,
    RetryLater,
)
from channels.matrix.errors import DeviceBusy, outcome_for_error

log = logging.getLogger("channels.matrix")


class MatrixSession:
    """Device lock, login, sync token, room state and direct rooms of ``MatrixChannel``."""

    user_id: str
    device_id: str
    access_token: str | None
    password: str | None
    store_path: Path | None
    encryption: bool
    device_name: str
    poll_timeout: float
    client: AsyncClient | None
    _lock_fd: int | None
    _direct: dict[str, str]
    _direct_version: int
    _direct_saved: int
    _direct_write_lock: asyncio.Lock
    _sync_lock: asyncio.Lock
    _synced: asyncio.Event
    _sync_started: int
    _sync_done: int
    _listening: bool

    async def open(self) -> None:  # the channel's
        raise NotImplementedError

    async def _sync(self, timeout_ms: int) -> SyncResponse | None:  # the listener's
        raise NotImplementedError

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
            return RetryLater("room state not synced yet", 1.0, provider=True)
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
