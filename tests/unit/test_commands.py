"""The bot's command vocabulary lives in the hub once; adapters hand over the raw first word."""

from __future__ import annotations

import pytest

from hub.bot import HANDLERS, VOCABULARY, command_of


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("/jam", ("jam", None)),  # Telegram
        ("/Jam@DisdukcapilBot", ("jam", None)),  # Telegram, a group addressing this bot
        ("!hours", ("jam", "en")),  # Matrix, English
        ("JAM.", ("jam", None)),  # SMS keyword with punctuation
        ("STOP", ("berhenti", None)),
        ("Subscribe", ("langganan", "en")),
        ("daftar", ("langganan", None)),
        ("#info", ("bantuan", None)),
    ],
)
def test_a_raw_first_word_names_its_command_and_language(word: str, expected: tuple[str, str | None]) -> None:
    assert command_of(word) == expected


@pytest.mark.parametrize("word", ["halo", "", "/", "jamu", "terima kasih"])
def test_other_words_are_no_command(word: str) -> None:
    assert command_of(word) is None


def test_every_word_leads_to_a_handler() -> None:
    assert {command for command, _ in VOCABULARY.values()} == set(HANDLERS)
