"""What a kelurahan relay reads besides the announcement, per channel and language, compared whole with
tests/golden/relays/ (rewrite with ``HUB_UPDATE_GOLDEN=1`` after reviewing the change).

The way to confirm is chosen from each real adapter's declared capabilities: a button (Telegram), a
reaction or a command (Matrix), ``OK KODE`` (SMS), a signed link (email).
"""

from __future__ import annotations

import os
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from channels.email import EmailChannel
from channels.matrix import MatrixChannel
from channels.sms import SmsChannel
from channels.telegram import TelegramChannel
from channels.testing import ScriptedChannel
from hub.relays import outbound
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden" / "relays"
UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"
ADAPTERS = {"telegram": TelegramChannel, "matrix": MatrixChannel, "sms": SmsChannel, "email": EmailChannel}


def _hub() -> Any:
    hub = SimpleNamespace(secret=b"golden-key")
    hub.settings = SimpleNamespace(hub=SimpleNamespace(public_url="https://hub.example.go.id"))
    return hub


@pytest.mark.parametrize("locale", ["id", "en"])
@pytest.mark.parametrize("channel", sorted(ADAPTERS))
def test_the_relay_paragraph_per_channel(channel: str, locale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.clock.utcnow", lambda: datetime(2020, 3, 23, 1, 0))  # the email link's time
    adapter = ScriptedChannel(name=channel, capabilities=ADAPTERS[channel].capabilities)
    text, buttons = outbound.relay_part(_hub(), adapter, locale, 4242, "kota-pekalongan", 17)
    shown = text + "".join(f"\n[{b.text}] -> {b.data or b.url}" for b in buttons) + "\n"
    path = GOLDEN / f"{channel}.{locale}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(shown, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: write it with HUB_UPDATE_GOLDEN=1, then review it"
    assert shown == path.read_text(encoding="utf-8")
