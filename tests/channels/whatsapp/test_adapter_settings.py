"""``[channels.whatsapp]`` as an operator writes it (settings.toml, then HUB_* variables), and what each of
Meta's error answers comes to, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from channels.base import ChannelSettingsError, RecipientGone, Rejected, RetryLater
from channels.whatsapp import MetaError, WhatsAppChannel, classify
from hub.errors import HubError
from hub.settings import load_settings

FILE = """\
[channels.whatsapp]
enabled = true
phone_number_id = "109876543210001"
rate_per_second = 80
messaging_limit = 250

[channels.whatsapp.templates.announcement]
name = "pengumuman_dukcapil"
parameters = ["subject", "text"]
languages = { id = "id", en = "en_US" }
[channels.whatsapp.templates.correction]
name = "ralat_dukcapil"
[channels.whatsapp.templates.applicant]
name = "status_permohonan"
"""

SECRETS = {
    "HUB_CHANNELS__WHATSAPP__TOKEN": "EAAsecret-token",
    "HUB_CHANNELS__WHATSAPP__APP_SECRET": "app-secret",
    "HUB_CHANNELS__WHATSAPP__VERIFY_TOKEN": "verify",
}


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = FILE, **env: str) -> WhatsAppChannel:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    for key, value in {**SECRETS, **env}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(path)
    settings.check_channels()
    return WhatsAppChannel.from_settings(settings.enabled_channels()["whatsapp"], public_url="")


def test_a_file_with_secrets_in_the_environment_gives_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = load(tmp_path, monkeypatch, HUB_CHANNELS__WHATSAPP__RATE_PER_SECOND="1000")
    conf = channel.settings
    assert (conf.token, conf.rate_per_second, conf.messaging_limit, conf.fallback_channel) == (
        "EAAsecret-token", 1000.0, 250, None,
    )  # fmt: skip
    announcement = conf.templates["announcement"]
    assert (announcement.language("en"), announcement.language("id"), announcement.language("jv")) == (
        "en_US", "id", "id",
    )  # fmt: skip
    assert channel.messages_url == "https://graph.facebook.com/v23.0/109876543210001/messages"


def test_templates_may_come_from_the_environment_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without = FILE.split("[channels.whatsapp.templates")[0]
    templates = {kind: {"name": f"t_{kind}"} for kind in ("announcement", "correction", "applicant")}
    channel = load(tmp_path, monkeypatch, without, HUB_CHANNELS__WHATSAPP__TEMPLATES=json.dumps(templates))
    assert {k: t.name for k, t in channel.templates.items()} == {k: v["name"] for k, v in templates.items()}


def test_a_kind_sent_as_a_template_without_one_stops_the_hub_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = FILE.replace('[channels.whatsapp.templates.correction]\nname = "ralat_dukcapil"\n', "")
    with pytest.raises(HubError) as raised:
        load(tmp_path, monkeypatch, text)
    assert str(raised.value) == "channels.whatsapp.templates.correction: missing"


def test_wrong_values_are_named_key_by_key_and_secrets_are_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = FILE.replace("rate_per_second = 80", "rate_per_second = 1200").replace(
        "messaging_limit = 250", "messaging_limit = 300"
    )
    text = text.replace('name = "status_permohonan"', 'name = "Status Permohonan"')
    with pytest.raises(HubError) as raised:
        load(tmp_path, monkeypatch, text, HUB_CHANNELS__WHATSAPP__TOKEN="")
    assert str(raised.value).split("; ") == [
        "channels.whatsapp.token: required, not set",
        "channels.whatsapp.rate_per_second: Input should be less than or equal to 1000 (got 1200)",
        "channels.whatsapp.messaging_limit: Input should be 0, 250, 2000, 10000 or 100000 (got 300)",
        "channels.whatsapp.templates.applicant.name: String should match pattern '^[a-z0-9_]{1,512}$' "
        "(got 'Status Permohonan')",
    ]


def test_unknown_keys_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubError) as raised:
        load(tmp_path, monkeypatch, FILE.replace("messaging_limit = 250", "messaging_limt = 250"))
    assert str(raised.value) == "channels.whatsapp.messaging_limt: unknown setting"


def test_validate_settings_without_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ChannelSettingsError) as raised:
        WhatsAppChannel.validate_settings({"token": "t", "phone_number_id": "1", "app_secret": "s"})
    assert str(raised.value).split("; ") == [
        "channels.whatsapp.verify_token: required, not set",
        "channels.whatsapp.templates.announcement: missing",
        "channels.whatsapp.templates.correction: missing",
        "channels.whatsapp.templates.applicant: missing",
    ]


# ------------------------------------------------------------------------------------------------ errors


def error(code: int | None, status: int = 400, retry_after: str | None = None) -> MetaError:
    data = {"messaging_product": "whatsapp", "details": "Details."}
    answer = {"message": f"(#{code}) Title", "type": "OAuthException", "code": code, "error_data": data}
    body = b"<html>Bad Gateway</html>" if code is None else json.dumps({"error": answer}).encode()
    headers = {"Retry-After": retry_after} if retry_after else {}
    return MetaError.from_response(status, body, headers)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (130429, 400, RetryLater("WhatsApp error 130429: (#130429) Title (Details.)", 8.0, provider=True)),
        (131056, 400, RetryLater("WhatsApp error 131056: (#131056) Title (Details.)", 8.0, provider=True)),
        (131048, 400, RetryLater("WhatsApp error 131048: (#131048) Title (Details.)", 8.0, provider=True)),
        (4, 400, RetryLater("WhatsApp error 4: (#4) Title (Details.)", 8.0, provider=True)),
        (80007, 400, RetryLater("WhatsApp error 80007: (#80007) Title (Details.)", 8.0, provider=True)),
        (133016, 400, RetryLater("WhatsApp error 133016: (#133016) Title (Details.)", 8.0, provider=True)),
        (131053, 400, RetryLater("WhatsApp error 131053: (#131053) Title (Details.)", provider=True)),
        (131000, 500, RetryLater("WhatsApp error 131000: (#131000) Title (Details.)", provider=True)),
        (None, 502, RetryLater("WhatsApp answered HTTP 502: no message", provider=True)),
        (None, 429, RetryLater("WhatsApp answered HTTP 429: no message", 8.0, provider=True)),
        (
            190,
            401,
            RetryLater("access token refused: WhatsApp error 190: (#190) Title (Details.)", provider=True),
        ),
        (0, 401, RetryLater("access token refused: WhatsApp error 0: (#0) Title (Details.)", provider=True)),
        (131026, 400, RecipientGone("WhatsApp error 131026: (#131026) Title (Details.)", fallback="sms")),
        (131047, 400, Rejected("WhatsApp error 131047: (#131047) Title (Details.)")),
        (132001, 404, Rejected("WhatsApp error 132001: (#132001) Title (Details.)")),
        (132018, 400, Rejected("WhatsApp error 132018: (#132018) Title (Details.)")),
        (None, 404, Rejected("WhatsApp answered HTTP 404: no message")),
    ],
)
def test_each_code_comes_to_its_outcome(code: int | None, status: int, expected: object) -> None:
    assert classify(error(code, status), fallback="sms", backoff=8.0) == expected


def test_the_providers_retry_after_wins_over_the_backoff() -> None:
    assert classify(error(130429, retry_after="12"), backoff=2.0).delay == 12.0  # type: ignore[union-attr]
    assert classify(error(130429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"), backoff=2.0).delay == 2.0  # type: ignore[union-attr]
    assert classify(error(131026)) == RecipientGone("WhatsApp error 131026: (#131026) Title (Details.)")
