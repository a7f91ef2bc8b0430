"""What anyone may read without signing in (issue 11): office pages, feeds, CAP alerts, printable notices.

``install(app)`` is what the API app calls; each module holds one kind of public document.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    from hub.public import cap, feeds, notices, pages

    app.include_router(pages.router)
    app.include_router(feeds.router)
    app.include_router(cap.router)
    app.include_router(notices.router)
