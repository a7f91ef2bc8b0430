"""Content → what the Cloud API takes: WhatsApp text markup, template parameters, interactive messages.

WhatsApp formats text with markers, not HTML: ``*bold*``, ``_italic_``, ``~strike~``, ```` ```mono``` ````
and `` `code` `` (https://faq.whatsapp.com/539178204879377). A text body holds 4,096 characters, an
interactive body 1,024; up to 3 reply buttons with titles of 20 characters and ids of 256
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/interactive-reply-buttons-messages);
a list holds up to 10 rows with titles of 24 characters and ids of 200, behind a button label of 20
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/interactive-list-messages).

A template parameter may not hold a newline or tab, nor more than 4 consecutive spaces: Meta refuses the
send with 132018, "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
(https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/).
So ``flatten`` joins lines: with a space after a line that ends a sentence or clause and before a list
item's bullet, otherwise with " · "; every other run of whitespace becomes one space; then it is cut to
the template's length cap at a word, ending with "…". A body with its parameters filled in holds at most
1,024 characters (132005 otherwise), so the cap (``max_length``) counts the parameters together.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from channels.base import Button, Content
from channels.whatsapp.config import TemplateSettings

MAX_TEXT = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_REPLY_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_ID = 200
#: The label of the button that opens a list.
LIST_LABEL = {"id": "Pilih", "en": "Choose"}

_MARKERS = {"b": "*", "strong": "*", "i": "_", "em": "_", "s": "~", "strike": "~", "del": "~", "code": "`"}
_SENTENCE_END = re.compile(r"[.!?:;,…][*_~`]*$")
_BULLET = re.compile(r"^(?:[•\-–·]|\d{1,2}[.)])\s")
_SPACES = re.compile(r"\s+")
_NEWLINES = re.compile(r"\n{3,}")


class _Markup(HTMLParser):
    """The inline HTML subset (``b i u s a code pre``, newlines as breaks) as WhatsApp markers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[list[str]] = [[]]
        self.tags: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts[-1].append("\n")
            return
        href = dict(attrs).get("href") if tag == "a" else None
        self.tags.append((tag, href))
        self.parts.append([])

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _ in self.tags):
            return
        while self.tags:
            open_tag, href = self.tags.pop()
            inner = "".join(self.parts.pop())
            self.parts[-1].append(_wrap(open_tag, inner, href))
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.parts[-1].append(data)

    def text(self) -> str:
        if self.tags:  # close what the source left open
            self.handle_endtag(self.tags[0][0])
        return "".join(self.parts[0])


def _wrap(tag: str, inner: str, href: str | None) -> str:
    """``inner`` in the tag's markers, the whitespace kept outside them (``* bold*`` would not render)."""
    if tag == "a":
        label = inner.strip()
        if not href or label == href:
            return inner
        return f"{inner} ({href})" if label else href
    if tag == "pre":
        return f"```{inner.strip(chr(10))}```" if inner.strip() else inner
    marker = _MARKERS.get(tag)
    core = inner.strip()
    if marker is None or not core:
        return inner
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{marker}{core}{marker}{trail}"


def to_whatsapp(content: Content) -> str:
    """The message as WhatsApp text: from the HTML rendering when there is one, else the plain text."""
    source = content.html
    if not source or "<body" in source or "<html" in source:  # a page (an email layout) is not inline
        return content.text.strip()
    parser = _Markup()
    parser.feed(source)
    parser.close()
    return _NEWLINES.sub("\n\n", parser.text()).strip()  # the parser has resolved the entities


def flatten(text: str, limit: int) -> str:
    """``text`` as one template parameter: no newline or tab, no run of spaces, at most ``limit`` long."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    joined = ""
    for line in filter(None, lines):
        if joined:
            joined += " " if _SENTENCE_END.search(joined) or _BULLET.match(line) else " · "
        joined += line
    if len(joined) <= limit:
        return joined
    cut = joined[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ·,;:") + "…"


def template_parameters(content: Content, template: TemplateSettings) -> list[str]:
    """The values of the template's ``{{1}}``, ``{{2}}``, ... from the Content fields it names.

    Each is flattened and cut to what is left of the template's ``max_length`` after the ones before
    it. An empty parameter is an error at Meta, so a missing subject is the text's first line.
    """
    values: list[str] = []
    text = _spelt_out(to_whatsapp(content), content.buttons, data=False)  # a template has no link buttons
    left = template.max_length
    for index, source in enumerate(template.parameters):
        if source == "subject":
            value = content.subject or next((line for line in text.splitlines() if line.strip()), "")
        else:
            value = text
        # Leave the parameters still to come a fair share of what is left.
        share = max(16, left - 16 * (len(template.parameters) - index - 1))
        values.append(flatten(value, share) or "-")
        left = max(16, left - len(values[-1]))
    return values


def template_object(content: Content, template: TemplateSettings) -> dict[str, Any]:
    """Meta's ``template`` object: name, language and the body's text parameters."""
    body: dict[str, Any] = {
        "type": "body",
        "parameters": [{"type": "text", "text": v} for v in template_parameters(content, template)],
    }
    return {
        "name": template.name,
        "language": {"code": template.language(content.locale)},
        "components": [body] if template.parameters else [],
    }


def _title(text: str, limit: int) -> str:
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _spelt_out(text: str, buttons: tuple[Button, ...], *, data: bool) -> str:
    """``text`` with link buttons (and, when ``data``, the other choices) written out on lines below."""
    lines = []
    for button in buttons:
        if button.url:
            if button.url not in text:  # the text may name the link already (the link announcement)
                lines.append(f"{button.text}: {button.url}")
        elif data and button.data is not None:
            lines.append(f"• {button.text}")
    return "\n\n".join(filter(None, [text, "\n".join(lines)]))


def free_form(content: Content) -> tuple[str, dict[str, Any]]:
    """A free-form message (inside the 24 h window): ``(type, object)`` for the send's JSON.

    Data buttons become reply buttons (up to 3) or a list (up to 10) when their ids fit; link buttons
    are written out in the text, since a reply-button message cannot carry a link. Otherwise the text
    spells every choice out.
    """
    text = to_whatsapp(content)
    choices = [b for b in content.buttons if b.data is not None and not b.url]
    body = _spelt_out(text, content.buttons, data=False)
    fits = (
        bool(choices) and len(body) <= MAX_INTERACTIVE_BODY and len({b.data for b in choices}) == len(choices)
    )
    if (
        fits
        and len(choices) <= MAX_REPLY_BUTTONS
        and all(len(b.data or "") <= MAX_BUTTON_ID for b in choices)
    ):
        titles = _unique([_title(b.text, MAX_BUTTON_TITLE) for b in choices], MAX_BUTTON_TITLE)
        buttons = [
            {"type": "reply", "reply": {"id": b.data, "title": t}}
            for b, t in zip(choices, titles, strict=True)
        ]
        return "interactive", {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}}
    if fits and len(choices) <= MAX_LIST_ROWS and all(len(b.data or "") <= MAX_ROW_ID for b in choices):
        titles = _unique([_title(b.text, MAX_ROW_TITLE) for b in choices], MAX_ROW_TITLE)
        rows = [{"id": b.data, "title": t} for b, t in zip(choices, titles, strict=True)]
        label = LIST_LABEL.get(content.locale, LIST_LABEL["id"])
        return "interactive", {
            "type": "list",
            "body": {"text": body},
            "action": {"button": label, "sections": [{"rows": rows}]},
        }
    return "text", {"body": _spelt_out(text, content.buttons, data=True), "preview_url": False}


def _unique(titles: list[str], limit: int) -> list[str]:
    """Titles must differ within a message; a repeated one gets a number."""
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        count = seen.get(title, 0) + 1
        seen[title] = count
        if count > 1:
            suffix = f" {count}"
            title = title[: limit - len(suffix)].rstrip() + suffix
        out.append(title)
    return out
