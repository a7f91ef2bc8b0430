"""The citizens' bot: one implementation of every command, for every channel.

Telegram's ``/jam``, Matrix's ``!jam`` and the SMS keyword ``JAM`` all arrive here as the same neutral
``Inbound`` record; replies go out through the urgent lane like any other message. Bahasa Indonesia
first, English when the citizen's client or keyword is English.

``vocabulary`` names the commands, ``dispatch`` answers a record with a handler (``subscribe``,
``offices``, ``track``, ``relay``, ``mydata``), ``conversation`` holds what one answer needs, and every
reply's text comes from ``templates/bot/<locale>.toml`` through ``texts``.
"""

from __future__ import annotations

from hub.bot.dispatch import HANDLERS, answer
from hub.bot.relay import relay_code
from hub.bot.vocabulary import VOCABULARY, command_of

__all__ = ["HANDLERS", "VOCABULARY", "answer", "command_of", "relay_code"]
