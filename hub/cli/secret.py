"""The deployment key: where it lives (``hub secret status``) and replacing it (``hub secret rotate``).

The key signs citizens' links and keys the hashes of PINs and API keys. Those hashes cannot be re-keyed:
the PINs and API keys themselves are not stored. So a rotation keeps the old key as a *previous* key,
accepted to verify only, and says what still depends on it; ``--drop-old`` forgets every previous key.
"""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from hub.cli.common import app, fail, out, settings_from_options
from hub.errors import HubError
from hub.settings import Settings
from hub.store.db import Database, new_key, read_key_file, write_key_file
from hub.store.models import ApiKey, ApplicantCase, IdempotentRequest

secret_app = typer.Typer(help="The deployment key (signs links, keys the hashes of PINs and API keys).")
app.add_typer(secret_app, name="secret")


@dataclass
class Held:
    """What the database holds that was made with the keys in use before a rotation."""

    api_keys: int
    cases: int
    answers: int


async def _held(db: Database) -> Held:
    async with db.session() as session:
        api_keys = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked.is_(False))
        )
        cases = await session.scalar(select(func.count()).select_from(ApplicantCase))
        answers = await session.scalar(
            select(func.count()).select_from(IdempotentRequest).where(IdempotentRequest.status_code != 0)
        )
    return Held(api_keys or 0, cases or 0, answers or 0)


def _run(settings: Settings, work: str, drop_old: bool = False) -> list[str]:
    async def go() -> list[str]:
        db = Database(settings.database.url, schema=settings.database.schema_name or None)
        try:
            keyring = await db.keyring(settings.hub)  # moves a key an older release kept in the database
            held = await _held(db)
        finally:
            await db.dispose()
        if work == "status":
            return _status(settings, len(keyring.previous), held)
        return _rotate(settings, drop_old, held)

    try:
        return asyncio.run(go())
    except HubError as exc:
        fail(str(exc), exc.exit_code)
    except Exception as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            fail("the database is not initialised: run `hub init` first")
        raise
    raise AssertionError("unreachable")


def _status(settings: Settings, previous: int, held: Held) -> list[str]:
    path = Path(settings.hub.secret_key_file)
    where = "hub.secret_key (settings or environment)" if settings.hub.secret_key else str(path)
    lines = [f"deployment key: {where}", f"previous keys (verify only): {previous}"]
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        shown = f"key file {path}: mode {mode:04o}"
        lines.append(shown + ("" if mode & 0o077 == 0 else " - others can read it: chmod 600 it"))
    lines.append(
        f"made with the keys above: {held.api_keys} API keys, {held.cases} applicant PINs, "
        f"{held.answers} saved retry answers"
    )
    return lines


def _rotate(settings: Settings, drop_old: bool, held: Held) -> list[str]:
    path = Path(settings.hub.secret_key_file)
    configured = settings.hub.secret_key
    kept = [] if drop_old else [k for k in [configured, *read_key_file(path)] if k]
    write_key_file(path, [new_key(), *kept])
    lines = [f"new deployment key written to {path} (mode 0600); it signs and hashes from the next start"]
    if drop_old:
        lines += [
            "previous keys dropped: nothing made before this rotation verifies any more:",
            f"  {held.api_keys} API keys stop working: issue new ones (`hub keys create`) and revoke these",
            f"  {held.cases} applicant PINs stop working: they cannot be re-issued "
            "(receipt codes still work)",
            f"  {held.answers} saved retry answers can no longer be replayed (a retry answers 409)",
            "  confirm and unsubscribe links in emails already sent stop working",
        ]
        if settings.hub.previous_secret_keys:
            lines.append("remove hub.previous_secret_keys from the settings: they would still verify")
    else:
        lines += [
            "the old key is kept in the file as a previous key: it verifies, it never signs or hashes.",
            "Re-keyed now: nothing stored can be, because the values are not held, only their hashes:",
            f"  {held.api_keys} API keys keep working through the previous key; issue new ones "
            "(`hub keys create`) and revoke these to move them to the new key",
            f"  {held.cases} applicant PINs keep working through the previous key (printed on receipts, "
            "they cannot be changed)",
            f"  {held.answers} saved retry answers replay through the previous key (kept for "
            f"{settings.api.idempotency_ttl_hours} h)",
            "  confirm and unsubscribe links already sent keep working through the previous key",
            "  receipt deep-link codes do not depend on the key",
            "If the old key may have leaked, whoever has it can make links the hub accepts while it is kept:"
            " run `hub secret rotate --drop-old` once the old API keys are replaced.",
        ]
    if configured:
        lines.append(
            "hub.secret_key is set (settings or HUB_HUB__SECRET_KEY) and wins over the key file: "
            "remove it so the new key is used"
        )
    lines.append("Restart every hub process (API, workers) now; copy the key file to each host running one.")
    return lines


@secret_app.command("rotate")
def rotate(
    drop_old: Annotated[
        bool,
        typer.Option(
            "--drop-old",
            help="Forget every previous key: old API keys, PINs and links stop working (after a leak).",
        ),
    ] = False,
) -> None:
    """Make a new deployment key; the old one keeps verifying what was made with it (unless --drop-old)."""
    for line in _run(settings_from_options(), "rotate", drop_old):
        out.print(line, highlight=False, markup=False)


@secret_app.command("status")
def status() -> None:
    """Where the deployment key lives and what depends on it (never the key itself)."""
    for line in _run(settings_from_options(), "status"):
        out.print(line, highlight=False, markup=False)
