"""The bot's replies, read from ``templates/bot/<locale>.toml``: citizen-facing text lives in templates.

One TOML file per locale holds every reply by key (Python format fields: ``{p}`` is the channel's command
prefix) and, in its ``[status]`` table, the words for an application's status. Indonesian is complete;
a key another locale lacks is answered in Indonesian. Read once per templates directory and cached.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: The locale every other falls back to, and the one a citizen without a known language gets.
DEFAULT_LOCALE = "id"


class BotTextError(RuntimeError):
    """The bot's texts are missing or malformed: a deployment error, found at the first reply."""


@dataclass(frozen=True)
class BotTexts:
    """Every locale's replies (``text``) and status words (``status``), fallbacks already filled in."""

    text: dict[str, dict[str, str]]
    status: dict[str, dict[str, str]]

    @property
    def locales(self) -> frozenset[str]:
        return frozenset(self.text)

    def get(self, locale: str, key: str) -> str:
        """The unformatted reply ``key`` in ``locale`` (Indonesian when the locale is unknown)."""
        return self.text.get(locale, self.text[DEFAULT_LOCALE])[key]

    def status_word(self, locale: str, status: str) -> str:
        """How ``locale`` names an application's status; the raw status when it names none."""
        return self.status.get(locale, self.status[DEFAULT_LOCALE]).get(status, status)


def read_locale(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """One locale file as (replies, status words), without fallbacks."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BotTextError(f"cannot read the bot's texts {path}: {exc}") from exc
    status = data.pop("status", {})
    for key, value in [*data.items(), *status.items()]:
        if not isinstance(value, str):
            raise BotTextError(f"{path}: {key!r} is not a string")
    return data, status


@lru_cache(maxsize=4)
def load_texts(directory: Path) -> BotTexts:
    """Every ``<locale>.toml`` in ``directory`` (``templates/bot``), Indonesian filling the gaps."""
    default = directory / f"{DEFAULT_LOCALE}.toml"
    if not default.is_file():
        raise BotTextError(f"the bot's texts {default} do not exist")
    base_text, base_status = read_locale(default)
    text, status = {DEFAULT_LOCALE: base_text}, {DEFAULT_LOCALE: base_status}
    for path in sorted(directory.glob("*.toml")):
        if path.stem != DEFAULT_LOCALE:
            own_text, own_status = read_locale(path)
            text[path.stem] = {**base_text, **own_text}
            status[path.stem] = {**base_status, **own_status}
    return BotTexts(text=text, status=status)
