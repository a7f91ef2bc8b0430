"""`hub notice`: print an announcement, or an office's current status, as a PDF for notice boards."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hub.cli.common import app, fail, out, with_hub
from hub.context import Hub


class PaperSize(StrEnum):
    a4 = "a4"
    a5 = "a5"


class Language(StrEnum):
    id = "id"
    en = "en"


@app.command("notice")
def notice(
    announcement_id: Annotated[
        int | None, typer.Argument(help="The announcement to print (or --office for the status).", min=1)
    ] = None,
    office: Annotated[
        str | None, typer.Option(help="Print this office's current status instead of an announcement.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the PDF.")] = Path(
        "notice.pdf"
    ),
    size: Annotated[PaperSize, typer.Option(help="Paper size.")] = PaperSize.a4,
    lang: Annotated[
        Language, typer.Option(help="Language; an announcement not written in it prints in Indonesian.")
    ] = Language.id,
) -> None:
    """Write a printable notice (large type, validity, contacts, QR codes to subscribe) as a PDF."""
    if (announcement_id is None) == (office is None):
        fail("give an announcement id or --office OFFICE (one of the two)")

    async def work(hub: Hub) -> tuple[str, int]:
        from hub import notices

        if office is not None:
            made = await notices.office_notice(hub, office, size=size.value, locale=lang.value)
        else:
            assert announcement_id is not None
            made = await notices.announcement_notice(hub, announcement_id, size=size.value, locale=lang.value)
        output.write_bytes(made.pdf)
        return made.version, len(made.pdf)

    version, length = with_hub(work, redis=False)
    out.print(
        f"{output}: {size.value.upper()}, {length // 1024 + 1} KB (version {version[:12]})", highlight=False
    )
