"""The staff console (issue 10): server-rendered pages under ``/console``, served by ``hub run``.

``install(app)`` is what the API app calls: it includes ``console_router`` and turns ``ConsoleExit``
(sign-in redirects, 403 and 404 pages) into its response. Page modules live in ``hub/console/pages/``,
each with a module-level ``router``; templates in ``templates/``, texts in ``texts/*.{id,en}.toml``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from hub.console.auth import ConsoleExit

#: Matched first (sign-in, stylesheet) and last (the console's own 404 page for any other path); every other
#: module of ``hub/console/pages/`` in between, by name. ``home`` is a placeholder dashboard, used only
#: while ``announcements`` (the real one) is missing.
FIRST, LAST, PLACEHOLDER = ("static", "signin"), ("fallback",), "home"


def page_modules() -> list[str]:
    """Names of the page modules to include, in the order their routes are matched."""
    from hub.console import pages

    modules = pkgutil.iter_modules(pages.__path__)
    found = sorted(info.name for info in modules if not info.name.startswith("_"))
    middle = [name for name in found if name not in (*FIRST, *LAST, PLACEHOLDER)]
    if "announcements" not in found:
        middle.append(PLACEHOLDER)
    return [*FIRST, *middle, *LAST]


def console_router(hub: Any = None) -> APIRouter:
    """Every console page under ``/console`` (``hub`` is unused: pages read it from the app's state)."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    for name in page_modules():
        router.include_router(importlib.import_module(f"hub.console.pages.{name}").router)
    return router


def install(app: FastAPI, hub: Any = None) -> None:
    """Serve the console from ``app`` under ``/console``."""
    app.include_router(console_router(hub))

    async def leave(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleExit)
        return exc.response  # type: ignore[return-value]

    app.add_exception_handler(ConsoleExit, leave)
