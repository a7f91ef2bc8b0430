"""Inbound: long-poll sync; commands, direct-chat text, invites and removals as the hub's records."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from nio import (
    InviteMemberEvent,
    JoinError,
    ReactionEvent,
    RoomGetStateResponse,
    RoomMemberEvent,
    RoomMessageText,
    SyncResponse,
    UnknownAccountDataEvent,
)

from channels.base import (
    Inbound,
    InboundSink,
)
from channels.matrix.errors import _NETWORK_ERRORS, DeviceBusy
from channels.matrix.transport import MatrixSession

log = logging.getLogger("channels.matrix")

# English command words map onto the Indonesian ones the hub implements.
ENGLISH_COMMANDS: Mapping[str, str] = {
    "subscribe": "langganan",
    "unsubscribe": "berhenti",
    "hours": "jam",
    "services": "layanan",
    "track": "lacak",
    "help": "bantuan",
}


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


def server_of(matrix_id: str) -> str:
    """The server name of a user id, alias or room id ('' for a server-less room id)."""
    return matrix_id.split(":", 1)[1].lower() if ":" in matrix_id else ""


def _level(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def may_manage(state: Sequence[Mapping[str, Any]], user_id: str) -> bool:
    """Whether ``user_id`` may manage a room with this state: a creator of the room, or someone whose
    power level reaches ``state_default``, the level needed to change the room's state.

    Creators are the sender of ``m.room.create`` (``creator`` in its content before room version 11,
    plus ``additional_creators`` from version 12, where creators stand above every power level). With
    no ``m.room.power_levels`` event at all, the spec gives everyone level 0 and state_default 0.
    """
    events = {(e.get("type"), e.get("state_key")): e for e in state}
    create = events.get(("m.room.create", ""), {})
    content = create.get("content") or {}
    creators = {create.get("sender"), content.get("creator"), *(content.get("additional_creators") or [])}
    if user_id in creators:
        return True
    levels = events.get(("m.room.power_levels", ""))
    if levels is None:
        return True
    power = levels.get("content") or {}
    users = power.get("users") or {}
    own = _level(users.get(user_id, power.get("users_default", 0)), 0)
    return own >= _level(power.get("state_default", 50), 50)


class MatrixInbound(MatrixSession):
    """The listening half of ``MatrixChannel``."""

    name: str
    allowed_servers: set[str]
    backlog_seconds: float
    standby_retry_seconds: float
    _handled_invites: set[str]
    _aliases: dict[str, str]

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
                if inbound.chat_kind == "group" and inbound.kind == "command" and inbound.sender:
                    admin = await self._sender_is_admin(room_id, inbound.sender)
                    inbound = dataclasses.replace(inbound, sender_is_admin=admin)
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

    async def _sender_is_admin(self, room_id: str, user_id: str) -> bool | None:
        """Whether the sender of a command in a room may manage it, from the room's state as the
        homeserver holds it now; None when it cannot be read (the hub then refuses what needs an admin)."""
        client = await self._client()
        try:
            resp = await client.room_get_state(room_id)
        except _NETWORK_ERRORS as exc:
            log.warning("matrix: reading the state of %s failed: %r", room_id, exc)
            return None
        if not isinstance(resp, RoomGetStateResponse):
            log.warning("matrix: reading the state of %s failed: %s", room_id, resp)
            return None
        return may_manage(resp.events, user_id)

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
        if isinstance(event, ReactionEvent):
            # A reaction to one of the hub's own events: a kelurahan relay confirming a broadcast.
            if event.sender == own_id or base["chat_kind"] != "group":
                return None
            return Inbound(kind="reaction", text=event.key, reply_ref=event.reacts_to, **base)
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
