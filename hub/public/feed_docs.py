"""One feed, written two ways: Atom (RFC 4287, with feedgen) and JSON Feed 1.1 (jsonfeed.org/version/1.1).

Routes build a ``Feed`` of ``Entry`` values (announcements, an office's status); these functions only
write it out, so the two formats never disagree on ids, times or texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feedgen.feed import FeedGenerator
from lxml import etree

from hub.clock import as_utc

ATOM_NS = "{http://www.w3.org/2005/Atom}"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
JSON_TYPE = "application/feed+json; charset=utf-8"


@dataclass
class Entry:
    id: str
    title: str
    #: Times naive UTC, as stored.
    updated: datetime
    published: datetime | None
    url: str
    text: str
    html: str
    locale: str
    author: str
    tags: list[str] = field(default_factory=list)
    #: What ``url`` points to (the CAP index's entries point to a CAP document).
    url_type: str = "text/html"
    #: Links beside the page: (href, rel, media type), e.g. the CAP document.
    links: list[tuple[str, str, str]] = field(default_factory=list)
    #: Facts for JSON Feed readers that want them (``_disdukcapil``): state, validity, CAP link...
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Feed:
    id: str
    title: str
    subtitle: str
    locale: str
    home_url: str
    atom_url: str
    json_url: str | None
    author: str
    entries: list[Entry]

    @property
    def updated(self) -> datetime:
        return max((e.updated for e in self.entries), default=datetime(2020, 1, 1))


def _aware(value: datetime) -> datetime:
    """Aware UTC, to the second (readers compare these; microseconds only make them longer)."""
    return (as_utc(value) or value.replace(tzinfo=UTC)).replace(microsecond=0)


def as_html(text_html: str) -> str:
    """The templates' HTML keeps its line breaks as newlines (Telegram's style); a feed reader needs tags:
    a paragraph per blank-line-separated block, ``<br>`` within one."""
    blocks = [b.strip() for b in text_html.strip().split("\n\n") if b.strip()]
    return "\n".join("<p>" + b.replace("\n", "<br>") + "</p>" for b in blocks)


def atom(feed: Feed) -> bytes:
    fg = FeedGenerator()
    fg.id(feed.id)
    fg.title(feed.title)
    fg.subtitle(feed.subtitle)
    fg.language(feed.locale)
    fg.author({"name": feed.author})
    fg.link(href=feed.atom_url, rel="self", type="application/atom+xml")
    fg.link(href=feed.home_url, rel="alternate", type="text/html")
    if feed.json_url:
        fg.link(href=feed.json_url, rel="alternate", type="application/feed+json")
    fg.updated(_aware(feed.updated))
    fg.generator("disdukcapil-hub")
    for item in feed.entries:
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.title(item.title)
        fe.updated(_aware(item.updated))
        if item.published is not None:
            fe.published(_aware(item.published))
        fe.author({"name": item.author})
        for term in item.tags:
            fe.category(term=term)
        fe.content(as_html(item.html), type="html")
    root = etree.fromstring(fg.atom_str(pretty=False, encoding="UTF-8"))
    # feedgen 1.0 writes an entry's links without their rel and type (its loop variable shadows the
    # link it reads them from), so a reader could not tell the page from the CAP document: written here.
    for element, item in zip(root.iterfind(f"{ATOM_NS}entry"), feed.entries, strict=True):
        links = [(item.url, "alternate", item.url_type), *item.links]
        for href, rel, media in links:
            link = etree.SubElement(element, f"{ATOM_NS}link", href=href, rel=rel, type=media)
            if rel == "alternate":
                link.set("hreflang", item.locale)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def json_feed(feed: Feed) -> bytes:
    items = []
    for item in feed.entries:
        entry: dict[str, Any] = {
            "id": item.id,
            "url": item.url,
            "title": item.title,
            "content_html": as_html(item.html),
            "content_text": item.text,
            "date_modified": _aware(item.updated).isoformat(),
            "authors": [{"name": item.author}],
            "language": item.locale,
        }
        if item.published is not None:
            entry["date_published"] = _aware(item.published).isoformat()
        if item.tags:
            entry["tags"] = item.tags
        if item.facts:
            entry["_disdukcapil"] = item.facts
        items.append(entry)
    document = {
        "version": JSON_FEED_VERSION,
        "title": feed.title,
        "description": feed.subtitle,
        "home_page_url": feed.home_url,
        "feed_url": feed.json_url,
        "language": feed.locale,
        "authors": [{"name": feed.author}],
        "items": items,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
