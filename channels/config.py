"""Adapter settings: one pydantic model per adapter for its ``[channels.<name>]`` table.

A leaf like ``channels.base`` (which re-exports what is here): it imports nothing from ``hub``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class ChannelSettingsError(ValueError):
    """A ``[channels.<name>]`` table that does not fit the adapter; the message names the key."""


# --------------------------------------------------------------------------------------------------------
# Settings: one pydantic model per adapter for its [channels.<name>] table


class ChannelSettings(BaseModel):
    """Base of every adapter's settings model.

    Environment overrides (``HUB_CHANNELS__EMAIL__USE_TLS=false``) arrive as strings; pydantic turns
    them into the declared types ("false" is False, "5" is 5.0), so an adapter never parses by hand.
    Unknown keys are errors: a misspelt key would otherwise be silently ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """``HUB_CHANNELS__EMAIL__PASSWORD=`` (set but empty) means unset, as a blank TOML value would."""
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() == "")}
        return data


def validate_table(name: str, model: type[ChannelSettings], table: Mapping[str, Any]) -> ChannelSettings:
    """``table`` as ``model``, or ``ChannelSettingsError`` with one line per wrong key."""
    try:
        return model.model_validate(dict(table))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = _table_path(table, error["loc"])
            where = ".".join(str(part) for part in ("channels", name, *loc))
            key = str(loc[-1]) if loc else ""
            if error["type"] == "missing":
                lines.append(f"{where}: required, not set")
            elif error["type"] == "extra_forbidden":
                lines.append(f"{where}: unknown setting")
            elif error["type"] == "union_tag_invalid":
                ctx = error.get("ctx", {})
                lines.append(
                    f"{where}.{ctx.get('discriminator', '').strip(chr(39))}: expected one of "
                    f"{ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
                )
            else:
                shown = "" if _secret(key) else f" (got {error.get('input')!r})"
                lines.append(f"{where}: {error['msg']}{shown}")
        raise ChannelSettingsError("; ".join(lines)) from None


def _table_path(table: Any, loc: Sequence[Any]) -> list[Any]:
    """The error's location as keys of the table; pydantic adds union tags the table does not have."""
    path, current = [], table
    for i, part in enumerate(loc):
        tag = i < len(loc) - 1 and path and isinstance(path[-1], int)
        if tag and isinstance(current, Mapping) and part not in current:
            continue  # e.g. the "kannel" in gateways.0.kannel.url
        path.append(part)
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, Sequence) and not isinstance(current, str) and isinstance(part, int):
            current = current[part] if part < len(current) else None
        else:
            current = None
    return path


def _secret(key: str) -> bool:
    return any(word in key for word in ("token", "password", "secret", "key"))


__all__ = ["ChannelSettings", "ChannelSettingsError", "validate_table"]
