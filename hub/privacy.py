"""Masking of addresses for logs and staff screens: never a full phone number or email address.

The adapter knows what its addresses look like (a Matrix room of an office is not personal, a citizen's
user id is): give ``mask`` the channel's adapter whenever it is at hand. Without one, the address's shape
is guessed, erring on the side of hiding more. A phone number keeps at most its country code and last three
digits (``+62*******678``), an email address its first character and domain (``w***@example.com``).
"""

from __future__ import annotations

from channels.base import Channel


def mask(address: str, channel: Channel | None = None) -> str:
    if channel is not None:
        return channel.mask_address(address)
    return guess_mask(address)


def guess_mask(address: str) -> str:
    """For an address whose channel is unknown here: the same forms the adapters give, or less."""
    if address.startswith("@") and ":" in address:  # a Matrix user, as the Matrix adapter masks it
        local, _, server = address[1:].partition(":")
        return f"@{local[:1]}***:{server}"
    if "@" in address and not address.startswith(("!", "#")):
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}" if local and domain else "***"
    if address.startswith("+") or address.isdigit():
        return Channel.mask_phone(address)
    if len(address) <= 4:
        return "***"
    return address[:3] + "***" + address[-2:]
