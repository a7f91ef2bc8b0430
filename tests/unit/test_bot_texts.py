"""The bot's texts in templates/bot/: every key the code uses exists in every locale, with the same fields."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest

from hub.bot.texts import DEFAULT_LOCALE, load_texts, read_locale

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ROOT / "templates" / "bot"
CODE = ROOT / "hub" / "bot"
LOCALES = ("id", "en")


def _keys_used() -> set[str]:
    """Every literal key passed to ``<conversation>.t(...)`` in hub/bot/."""
    keys = set()
    for path in CODE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "t"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                keys.add(node.args[0].value)
    return keys


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_code_uses_texts() -> None:
    assert {"help", "unknown", "subscribed", "track_status", "relay_ok"} <= _keys_used()


@pytest.mark.parametrize("locale", LOCALES)
def test_every_key_used_in_code_is_in_each_locale_file(locale: str) -> None:
    text, _ = read_locale(TEXTS / f"{locale}.toml")
    assert _keys_used() - set(text) == set()


@pytest.mark.parametrize("locale", LOCALES)
def test_no_locale_file_holds_a_key_the_code_never_uses(locale: str) -> None:
    text, _ = read_locale(TEXTS / f"{locale}.toml")
    assert set(text) - _keys_used() == set()


def test_id_and_en_name_the_same_placeholders_per_key() -> None:
    indonesian, id_status = read_locale(TEXTS / "id.toml")
    english, en_status = read_locale(TEXTS / "en.toml")
    for key in indonesian.keys() & english.keys():
        assert _fields(indonesian[key]) == _fields(english[key]), key
    assert set(id_status) == set(en_status)
    assert not any(_fields(word) for word in [*id_status.values(), *en_status.values()])


def test_every_status_of_an_application_has_a_word() -> None:
    texts = load_texts(TEXTS)
    for locale in LOCALES:
        assert set(texts.status[locale]) == {
            "received",
            "verified",
            "needs_document",
            "ready",
            "rejected",
            "done",
        }
    assert texts.status_word("en", "ready") == "ready for pickup"
    assert texts.status_word("id", "ready") == "siap diambil"
    assert texts.status_word("id", "something_new") == "something_new"


def test_a_key_missing_in_english_is_answered_in_indonesian(tmp_path: Path) -> None:
    (tmp_path / "id.toml").write_text(
        'hello = "Halo {p}"\nbye = "Sampai jumpa"\n[status]\ndone = "selesai"\n'
    )
    (tmp_path / "en.toml").write_text('hello = "Hello {p}"\n')
    texts = load_texts(tmp_path)
    assert texts.get("en", "hello") == "Hello {p}"
    assert texts.get("en", "bye") == "Sampai jumpa"
    assert texts.status_word("en", "done") == "selesai"
    assert texts.get("fr", "hello") == "Halo {p}"
    assert texts.locales == {DEFAULT_LOCALE, "en"}


def test_texts_are_read_once() -> None:
    assert load_texts(TEXTS) is load_texts(TEXTS)


def test_help_keeps_its_lines() -> None:
    help_id = load_texts(TEXTS).get("id", "help")
    assert help_id.startswith("Layanan informasi Disdukcapil. Perintah:\n{p}langganan")
    assert help_id.endswith("{p}bantuan - pesan ini")
