"""Masking of addresses for logs and staff screens: never a full phone number or email address."""

from __future__ import annotations


def mask(address: str) -> str:
    if "@" in address and not address.startswith(("@", "!", "#")):
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if address.startswith("+") or address.isdigit():
        return address[:5] + "****" + address[-3:] if len(address) > 8 else "****"
    if len(address) <= 4:
        return "***"
    return address[:3] + "***" + address[-2:]
