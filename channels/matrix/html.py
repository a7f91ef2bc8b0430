"""What a message looks like in Matrix: a plain body and ``org.matrix.custom.html``."""

from __future__ import annotations

import html

from channels.base import (
    Content,
)


def render(content: Content) -> tuple[str, str]:
    """Plain body and HTML body; Matrix HTML needs ``<br>`` for line breaks, buttons become links."""
    body = content.text
    formatted = content.html if content.html is not None else html.escape(content.text)
    links = [b for b in content.buttons if b.url]
    if links:
        body += "\n\n" + "\n".join(f"{b.text}: {b.url}" for b in links)
        formatted += "\n\n" + " | ".join(
            f'<a href="{html.escape(b.url or "", quote=True)}">{html.escape(b.text)}</a>' for b in links
        )
    return body, formatted.replace("\r\n", "\n").replace("\n", "<br>")
