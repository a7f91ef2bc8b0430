"""The bot's command vocabulary, once for every channel.

Adapters hand over the raw first word (``/Jam``, ``!jam``, ``JAM.``); which command it names, and which
language it implies, is decided here alone.
"""

from __future__ import annotations

#: Every word the bot takes as a command, on every channel: ``word -> (command, language it implies)``.
#: Indonesian words keep the citizen's language (their client's, or Indonesian); English ones answer in
#: English, whatever the client says.
VOCABULARY: dict[str, tuple[str, str | None]] = {
    "start": ("start", None),
    "mulai": ("start", None),
    "langganan": ("langganan", None),
    "daftar": ("langganan", None),
    "subscribe": ("langganan", "en"),
    "berhenti": ("berhenti", None),
    "stop": ("berhenti", None),
    "unsubscribe": ("berhenti", "en"),
    "jam": ("jam", None),
    "hours": ("jam", "en"),
    "layanan": ("layanan", None),
    "services": ("layanan", "en"),
    "lacak": ("lacak", None),
    "track": ("lacak", "en"),
    "bantuan": ("bantuan", None),
    "info": ("bantuan", None),
    "help": ("bantuan", "en"),
    "kelurahan": ("kelurahan", None),
    "relay": ("kelurahan", "en"),
    "diteruskan": ("diteruskan", None),
    "forwarded": ("diteruskan", "en"),
    "ok": ("diteruskan", None),
    "dataku": ("dataku", None),
    "mydata": ("dataku", "en"),
    "hapus": ("hapus", None),
    "erase": ("hapus", "en"),
}
#: What may surround a command word: the channel's prefix, a Telegram ``@botname``, punctuation.
_WORD_EDGES = "/!#.,?:;"


def command_of(word: str) -> tuple[str, str | None] | None:
    """The command a first word names and the language it implies; None when it names none."""
    key = word.strip().split("@", 1)[0].strip(_WORD_EDGES).lower()
    return VOCABULARY.get(key)
