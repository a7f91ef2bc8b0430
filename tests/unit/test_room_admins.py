"""Who may manage a Matrix room, by the spec's rules, from the room's state as the homeserver returns it."""

from __future__ import annotations

from typing import Any

from channels.matrix.inbound import may_manage

LURAH, WARGA, STAF = "@lurah:localhost", "@warga:localhost", "@staf:localhost"


def state(create: dict[str, Any], levels: dict[str, Any] | None) -> list[dict[str, Any]]:
    events = [{"type": "m.room.create", "state_key": "", **create}]
    if levels is not None:
        events.append({"type": "m.room.power_levels", "state_key": "", "sender": LURAH, "content": levels})
    events.append({"type": "m.room.member", "state_key": WARGA, "sender": WARGA, "content": {}})
    return events


def test_power_to_change_state_or_being_a_creator_makes_an_admin() -> None:
    v10 = {"sender": LURAH, "content": {"creator": LURAH, "room_version": "10"}}
    levels = {"users": {LURAH: 100, STAF: 50}, "users_default": 0, "state_default": 50}
    assert [may_manage(state(v10, levels), u) for u in (LURAH, STAF, WARGA)] == [True, True, False]

    # state_default is the bar, not a fixed 50; left out, it is 50.
    assert may_manage(state(v10, {**levels, "state_default": 100}), STAF) is False
    assert may_manage(state(v10, {"users": {STAF: 49}}), STAF) is False
    assert may_manage(state(v10, {"users": {}, "users_default": 50}), WARGA) is True

    # A creator demoted below state_default stays a creator (room version 12: above every level);
    # version 11 names the creator only as the sender of m.room.create.
    v12 = {"sender": LURAH, "content": {"room_version": "12", "additional_creators": [STAF]}}
    demoted = {"users": {LURAH: 0, STAF: 0}, "state_default": 50}
    assert [may_manage(state(v12, demoted), u) for u in (LURAH, STAF, WARGA)] == [True, True, False]

    # No power levels at all: the spec lets everyone change state.
    assert may_manage(state(v10, None), WARGA) is True
