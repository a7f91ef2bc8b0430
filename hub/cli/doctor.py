"""`hub doctor`: a line per check of this host's deployment (``hub.doctor``); exit 1 when any fails."""

from __future__ import annotations

import asyncio

import typer

from hub.cli.common import State, app, out


@app.command()
def doctor() -> None:
    """Check this host's deployment: settings, key, database, migrations, Redis, clocks, channels.

    Read-only: migrates nothing, sends nothing, logs in to no session. Exit 1 when a check fails.
    """
    from hub import doctor as checks
    from hub.logs import configure, secret_values
    from hub.settings import load_settings

    async def go() -> int:
        failed = 0
        async for check in checks.checks(State.settings_path):
            if check.part == "settings" and check.ok:
                # The settings' secrets never appear in a line (a provider's error may quote a URL).
                settings = load_settings(State.settings_path)
                logs = settings.log
                configure(logs.level, logs.json_logs, logs.libraries, secret_values(settings))
            mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
            out.print(f"{mark} {check.part}: ", end="", highlight=False)
            out.print(check.detail, highlight=False, markup=False)
            failed += not check.ok
        if failed:
            out.print(f"{failed} check(s) failed", highlight=False)
        else:
            out.print("every check passed", highlight=False)
        return 1 if failed else 0

    code = asyncio.run(go())
    if code:
        raise typer.Exit(code)
