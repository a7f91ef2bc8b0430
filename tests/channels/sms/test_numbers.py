import pytest

from channels.base import InvalidAddress
from channels.sms import SmsChannel
from channels.sms.numbers import mask_msisdn, normalize_msisdn


@pytest.mark.parametrize(
    "raw",
    [
        "081234567890",
        "0812-3456-7890",
        "0812 3456 7890",
        "0812.3456.7890",
        "+6281234567890",
        "+62 812-3456-7890",
        "+62 (812) 3456 7890",
        "6281234567890",
        "62 812 3456 7890",
        "  081234567890  ",
        "0062 812 3456 7890",  # the international call prefix dialled from Indonesia (issue 8, defect 14)
        "00 62 812-3456-7890",
    ],
)
def test_formats_normalise_to_e164(raw: str) -> None:
    assert normalize_msisdn(raw) == "+6281234567890"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0811234567", "+62811234567"),  # short Telkomsel number (10 digits)
        ("085712345678", "+6285712345678"),  # Indosat
        ("0896-1234-5678", "+6289612345678"),  # Tri
    ],
)
def test_operator_prefixes(raw: str, expected: str) -> None:
    assert normalize_msisdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0812-3456-78x0", "only digits"),
        ("+1 415 555 2671", "not Indonesian"),
        ("+44 7911 123456", "not Indonesian"),
        ("021-5000-1234", "landline"),  # Jakarta fixed line
        ("+6281", "not a valid"),
        ("0812345678901234", "not a valid"),
        ("0812+34567890", "only digits"),
    ],
)
def test_invalid_numbers_say_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidAddress, match=why):
        normalize_msisdn(raw)


def test_error_message_does_not_repeat_the_number() -> None:
    with pytest.raises(InvalidAddress) as info:
        normalize_msisdn("+1 415 555 2671")
    assert "4155552671" not in str(info.value)


def test_mask() -> None:
    assert mask_msisdn("+6281234565678") == "+62*******678"
    assert mask_msisdn("+62811234567") == "+62*******567"
    assert mask_msisdn("+62812") == "***"


def test_channel_uses_them() -> None:
    channel = SmsChannel.from_settings(
        {
            "dlr_secret": "x",
            "gateways": [{"driver": "kannel", "url": "http://k", "username": "u", "password": "p"}],
        },
        public_url="https://hub.example",
    )
    assert channel.normalize_address("0812-3456-7890") == "+6281234567890"
    assert channel.mask_address("+6281234567890") == "+62*******890"
