"""CSV import of subscribers (editor+), through the importer behind ``hub subscribers import``.

The importer checks every row before writing any (``hub.subscriptions.import_csv``): a file with a bad row
imports nothing and the page lists each bad row beside the form. Progress is server-side: the upload's
answer is the result page, sent once every row is written (the form says so); the page shows the rows
processed out of the file's rows. Files are capped at ``MAX_BYTES``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from hub import audience, subscriptions
from hub.console import audit, sessions, web
from hub.console.auth import Role, Staff, need
from hub.console.pages.subscribers import topics_of

router = APIRouter()
EDITOR = need(Role.EDITOR)
#: About 100,000 rows of email addresses: larger files go through ``hub subscribers import``.
MAX_BYTES = 5 * 1024 * 1024
_LINE = re.compile(r"^line (\d+): (.*)$", re.DOTALL)
_EMPTY = re.compile(r"^empty (\w+)$")
_LOCALE = re.compile(r"^locale '(.*)' is not one of ", re.DOTALL)


def _form(
    request: Request,
    staff: Staff,
    topics: list[Any],
    values: dict[str, str],
    errors: dict[str, str],
    problems: list[tuple[str, str, dict[str, str], str]] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    hub = sessions.hub_of(request)
    return web.page(
        request,
        "subscribers/import.html.j2",
        staff,
        status_code=status_code,
        topics=topics,
        channels=sorted(hub.channels),
        values=values,
        errors=errors,
        problems=problems or [],
        max_mb=MAX_BYTES // (1024 * 1024),
    )


@router.get("/pelanggan/impor")
async def import_form(request: Request, staff: Staff = Depends(EDITOR)) -> HTMLResponse:
    topics = await topics_of(request, staff)
    values = {"topic": topics[0].slug if topics else "", "channel": "email", "confirmed": ""}
    return _form(request, staff, topics, values, {})


def _problems(lines: list[str]) -> list[tuple[str, str, dict[str, str], str]]:
    """``line N: what`` -> (N, text key, its values, what): the importer's own checks get a text in both
    locales; an adapter's address check keeps its words (English), shown as they are."""
    out = []
    for line in lines:
        found = _LINE.match(line)
        number, what = (found.group(1), found.group(2)) if found else ("", line)
        empty, locale = _EMPTY.match(what), _LOCALE.match(what)
        if empty:
            out.append((number, "imports.empty", {"column": empty.group(1)}, what))
        elif locale:
            out.append((number, "imports.locale_bad", {"locale": locale.group(1)}, what))
        else:
            out.append((number, "", {}, what))
    return out


async def _read_upload(request: Request) -> tuple[str | None, str]:
    """The uploaded file's text, or None and the text key of what is wrong with it."""
    upload = (await request.form()).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None, "imports.file_missing"
    raw = await upload.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        return None, "imports.file_too_big"
    try:
        return raw.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        return None, "imports.file_not_utf8"


@router.post("/pelanggan/impor")
async def import_upload(request: Request, staff: Staff = Depends(EDITOR)) -> Response:
    posted = await web.form(request)
    hub = sessions.hub_of(request)
    topics = await topics_of(request, staff)
    values = {name: web.field(posted, name) for name in ("topic", "channel", "confirmed")}
    errors: dict[str, str] = {}
    topic = next((t for t in topics if t.slug == values["topic"]), None)
    if topic is None:
        errors["topic"] = "imports.topic_bad"
    if values["channel"] not in hub.channels:
        errors["channel"] = "imports.channel_bad"
    text, wrong = await _read_upload(request)
    if text is None:
        errors["file"] = wrong
    if errors or text is None or topic is None:
        return _form(request, staff, topics, values, errors, status_code=400)
    confirmed = values["confirmed"] == "1"
    try:
        counts = await subscriptions.import_csv(hub, text, topic.slug, values["channel"], confirmed=confirmed)
    except subscriptions.ImportRejected as rejected:
        async with hub.db.transaction() as session:
            await audit.record(
                session,
                staff,
                "subscribers.import_rejected",
                f"topic:{topic.slug}",
                {"bad_rows": len(rejected.problems), "channel": values["channel"]},
            )
        return _form(request, staff, topics, values, {}, _problems(rejected.problems), status_code=400)
    except subscriptions.SubscriptionError as refused:  # no usable header row
        errors["file"] = "imports.no_column" if "header" in str(refused) else "imports.file_bad"
        return _form(request, staff, topics, values, errors, status_code=400)
    async with hub.db.transaction() as session:
        await audit.record(
            session,
            staff,
            "subscribers.import",
            f"topic:{topic.slug}",
            {**counts, "channel": values["channel"], "confirmed": confirmed},
        )
    await audience.refresh(hub)  # the counts pages show are right at once, not at the next count
    return web.page(
        request, "subscribers/imported.html.j2", staff, topic=topic, counts=counts, confirmed=confirmed
    )
