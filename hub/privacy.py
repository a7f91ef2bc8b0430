"""Masking of addresses for logs and staff screens: never a full phone number or email address.

The adapter knows what its addresses look like (a Matrix room of an office is not personal, a citizen's
user id is; an Indonesian number keeps its operator prefix): give ``mask`` the channel's adapter whenever
it is at hand. Without one, the address's shape is guessed, erring on the side of hiding more.
"""

from __future__ import annotations

from channels.base import Channel


def mask(address: str, channel: Channel | None = None) -> str:
    if channel is not None:
        return channel.mask_address(address)
    return guess_mask(address)


def guess_mask(address: str) -> str:
    """For an address whose channel is unknown here."""
    if "@" in address and not address.startswith(("@", "!", "#")):
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if address.startswith("+") or address.isdigit():
        return address[:5] + "****" + address[-3:] if len(address) > 8 else "****"
    if len(address) <= 4:
        return "***"
    return address[:3] + "***" + address[-2:]
