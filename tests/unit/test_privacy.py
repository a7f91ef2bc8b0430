"""Masks (issue 9, hole 10): what logs and staff screens show of a citizen's address.

A phone number keeps at most its country code and last three digits, always behind seven stars (the
mask does not tell the length either); an email address keeps its first character and its domain. The
SMS adapter and ``guess_mask`` (an address whose channel is unknown) give the same form.
"""

from __future__ import annotations

import pytest

from channels.email import EmailChannel
from channels.matrix.channel import MatrixChannel
from channels.sms import SmsChannel
from hub.privacy import guess_mask, mask

PHONES = [
    ("+62812345678", "+62*******678"),
    ("+6281234567890", "+62*******890"),
    ("+628111222333", "+62*******333"),
    ("+14155552671", "+1*******671"),
    ("+353861234567", "+353*******567"),
    ("081234567890", "*******890"),
]


def _sms() -> SmsChannel:
    return SmsChannel.from_settings(
        {
            "dlr_secret": "x" * 16,
            "gateways": [{"driver": "kannel", "url": "http://k", "username": "u", "password": "p"}],
        },
        public_url="https://hub.example",
    )


@pytest.mark.parametrize(("number", "masked"), PHONES)
def test_a_phone_number_keeps_only_its_country_code_and_last_three_digits(number: str, masked: str) -> None:
    assert guess_mask(number) == masked
    if number.startswith("+62"):
        assert _sms().mask_address(number) == masked
        assert mask(number, _sms()) == masked


@pytest.mark.parametrize("short", ["+62812", "12345", "+62", "", "+62-812"])
def test_what_is_too_short_or_not_a_number_shows_nothing(short: str) -> None:
    assert guess_mask(short) == "***"
    assert SmsChannel.mask_phone(short) == "***"


def test_an_email_address_keeps_its_first_character_and_domain() -> None:
    email = EmailChannel(host="127.0.0.1", port=25, sender="hub@example.go.id")
    assert email.mask_address("warga.serang@example.com") == "w***@example.com"
    assert email.mask_address("a@example.com") == "a***@example.com"
    assert email.mask_address("no-at-sign") == "***"
    assert guess_mask("warga.serang@example.com") == "w***@example.com"


def test_a_citizens_matrix_id_is_masked_alike_with_and_without_the_adapter() -> None:
    matrix = MatrixChannel(homeserver="http://x", user_id="@bot:x", device_id="D", access_token="t")
    assert matrix.mask_address("@budi.santoso:matrix.org") == "@b***:matrix.org"
    assert guess_mask("@budi.santoso:matrix.org") == "@b***:matrix.org"
    assert matrix.mask_address("!kantor:matrix.org") == "!kantor:matrix.org"  # an office's room


def test_other_addresses_are_guessed_hiding_more() -> None:
    assert guess_mask("-1001234567890") == "-10***90"
    assert guess_mask("@namapengguna") == "***"
    assert guess_mask("abcd") == "***"
