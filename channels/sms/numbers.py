"""Indonesian mobile numbers: one canonical E.164 form (``+628…``) for every way people write them.

Citizens type ``0812-3456-7890``, ``+62 812 3456 7890``, ``6281234567890`` or ``0062 812 3456 7890``;
the hub must store one form so that a subscriber is one endpoint, and gateways get a number they can
route.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from channels.base import Channel, InvalidAddress

_SEPARATORS = re.compile(r"[\s\-.()/]")
_ALLOWED = re.compile(r"^\+?\d+$")
_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
_HINT = "an Indonesian mobile number looks like 0812-3456-7890, +62 812 3456 7890 or 6281234567890"


def normalize_msisdn(raw: str) -> str:
    """Return ``raw`` as E.164 (``+628…``) or raise ``InvalidAddress`` saying what is wrong.

    The message never repeats the full number, because it may end up in logs.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidAddress(f"the phone number is empty; {_HINT}")
    compact = _SEPARATORS.sub("", text)
    if not _ALLOWED.match(compact):
        raise InvalidAddress(
            f"the phone number may contain only digits, spaces, dashes, dots and a leading +; {_HINT}"
        )
    if compact.startswith("00"):
        # "00" is the international call prefix dialled from Indonesia: 0062 812… is +62 812….
        compact = "+" + compact[2:]
    if compact.startswith("62"):
        # Without the plus, "62…" is the country code; make that explicit rather than leave it to heuristics.
        compact = "+" + compact
    try:
        number = phonenumbers.parse(compact, "ID")
    except NumberParseException as exc:
        raise InvalidAddress(
            f"the phone number cannot be read ({exc.error_type.name.lower()}); {_HINT}"
        ) from exc
    if number.country_code != 62:
        raise InvalidAddress(
            f"the phone number is not Indonesian (country code +{number.country_code}); {_HINT}"
        )
    if not phonenumbers.is_valid_number(number):
        digits = len(str(number.national_number))
        raise InvalidAddress(
            f"the phone number is not a valid Indonesian number ({digits} digits after +62); {_HINT}"
        )
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidAddress(f"the phone number is a landline or special number, not a mobile one; {_HINT}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_msisdn(address: str) -> str:
    """``+6281234565678`` → ``+62*******678``: the country code and the last three digits, no more."""
    return Channel.mask_phone(address)
